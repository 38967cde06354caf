package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/msync/msync/internal/cluster"
	"github.com/msync/msync/pkg/config"
)

const allUsage = `Usage: msync all [-c FILE] [--data DIR]

Runs comet + logic + job in one process: devices connect over TCP to the comet
address, businesses publish over HTTP to the logic address, oplogs are stored in
a Pebble directory and pushed through an in-process queue. Needs no other
server. Stop it with Ctrl-C (SIGINT) or SIGTERM: it closes connections (clients
reconnect and resync) and flushes the store. Nothing acknowledged is lost, also
on kill -9. SIGHUP re-reads the upstreams (RPC services) of the config file.

Example:
  msync all -c configs/msync.yaml --data ./data
`

func runAll(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("all", allUsage, stderr)
	cfgPath := fs.String("c", "configs/msync.yaml", "config file")
	data := fs.String("data", "", "Pebble data directory (default: store.dir of the config, ./data)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	log, err := newLogger(f, stderr)
	if err != nil {
		return err
	}
	if f.HasDevKey() {
		log.Warn("the development API key is configured; remove it outside development", "key", config.DevAPIKey)
	}
	node, err := cluster.Start(cluster.Config{File: f, DataDir: *data, Logger: log})
	if err != nil {
		return err
	}
	dir := f.Store.Dir
	if *data != "" {
		dir = *data
	}
	log.Info("msync all-in-one started",
		"comet_tcp", node.Comet.Addr().String(), "logic_http", node.Logic.HTTPAddr().String(), "data", dir)
	cluster.ReloadOnHangup(ctx, node.Comet, *cfgPath, log) // ends with ctx
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return node.Shutdown(sctx)
}

func newLogger(f *config.File, w io.Writer) (*slog.Logger, error) {
	level, err := f.SlogLevel()
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f.Log.Format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log.format %q: want text or json", f.Log.Format)
}

package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/msync/msync/internal/cluster"
	"github.com/msync/msync/pkg/config"
)

// shutdownTimeout bounds a tier's graceful shutdown after SIGINT/SIGTERM.
const shutdownTimeout = 15 * time.Second

// startupWait bounds how long a tier waits at start for a store or broker
// that does not answer yet (it logs each retry).
const startupWait = 5 * time.Minute

const cometUsage = `Usage: msync comet -c FILE [--id ID] [--addr ADDR] [--grpc ADDR] [--advertise ADDR] [--http ADDR] [--logic ADDRS]

Runs one comet (the connection tier) of a cluster. Devices connect to
comet.addr over TCP; the comet calls logic over gRPC (comet.logic_addrs,
round robin) and serves the push API job calls on comet.grpc_addr. It
registers itself (id + gRPC address) through logic at start and every
comet.renew_interval; job finds it there, so comets can join and leave
without restarting anything. /healthz and /metrics are served on
comet.http_addr when set. The flags override the file, so one file serves
several comets on one machine (ids must be unique).

Ctrl-C (SIGINT) or SIGTERM closes the device connections (devices reconnect
to another comet and resync) and stops. SIGHUP re-reads the upstreams (RPC
services) of the config file.

Example (the mixed local cluster, see 'make cluster'):
  msync comet -c configs/cluster-comet.yaml --id comet-2 --addr :3103 --grpc 127.0.0.1:3104 --http 127.0.0.1:3202
`

func runComet(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("comet", cometUsage, stderr)
	cfgPath := fs.String("c", "configs/cluster-comet.yaml", "config file")
	id := fs.String("id", "", "comet id, unique in the cluster (overrides comet.id)")
	addr := fs.String("addr", "", "device TCP listen address (overrides comet.addr)")
	grpcAddr := fs.String("grpc", "", "gRPC listen address of the push API (overrides comet.grpc_addr)")
	adv := fs.String("advertise", "", "gRPC address registered for job (overrides comet.grpc_advertise)")
	httpAddr := fs.String("http", "", "/healthz and /metrics address (overrides comet.http_addr)")
	logicAddrs := fs.String("logic", "", "comma-separated logic gRPC addresses (overrides comet.logic_addrs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, log, err := loadTier(*cfgPath, stderr)
	if err != nil {
		return err
	}
	override(&f.Comet.ID, *id)
	override(&f.Comet.Addr, *addr)
	override(&f.Comet.GRPCAddr, *grpcAddr)
	override(&f.Comet.GRPCAdvertise, *adv)
	override(&f.Comet.HTTPAddr, *httpAddr)
	if *logicAddrs != "" {
		f.Comet.LogicAddrs = strings.Split(*logicAddrs, ",")
	}
	n, err := cluster.StartComet(cluster.TierConfig{File: f, Logger: log, StartupWait: startupWait, Context: ctx})
	if err != nil {
		return err
	}
	attrs := []any{"comet", n.Comet.ID(), "comet_tcp", n.Comet.Addr().String(), "grpc", n.RPC.Addr().String(), "advertised", n.Advertised}
	if n.OpsAddr != nil {
		attrs = append(attrs, "http", n.OpsAddr.String())
	}
	log.Info("msync comet started", attrs...)
	cluster.ReloadOnHangup(ctx, n.Comet, *cfgPath, log) // ends with ctx
	return waitAndStop(ctx, log, n.Shutdown)
}

const logicUsage = `Usage: msync logic -c FILE [--data DIR] [--http ADDR] [--grpc ADDR]

Runs logic (the business HTTP API, and the gRPC service comets call) of a
cluster. With job.embedded: true in the file, job runs in this process too,
on logic's in-process queue and online directory: that is the mixed local
layout (one logic+job process on the Pebble store in --data, any number of
'msync comet' processes). Without it, job runs as 'msync job' and the store,
queue and directory must be shared backends (store.backend cassandra, a
broker queue).

Ctrl-C (SIGINT) or SIGTERM stops accepting publishes, lets in-flight calls
finish and flushes the store.

Example (the mixed local cluster, see 'make cluster'):
  msync logic -c configs/cluster-logic.yaml --data ./data-cluster
`

func runLogic(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("logic", logicUsage, stderr)
	cfgPath := fs.String("c", "configs/cluster-logic.yaml", "config file")
	data := fs.String("data", "", "Pebble data directory (default: store.dir of the config)")
	httpAddr := fs.String("http", "", "business HTTP API address (overrides logic.http_addr)")
	grpcAddr := fs.String("grpc", "", "gRPC address comets call (overrides logic.grpc_addr)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, log, err := loadTier(*cfgPath, stderr)
	if err != nil {
		return err
	}
	override(&f.Logic.HTTPAddr, *httpAddr)
	override(&f.Logic.GRPCAddr, *grpcAddr)
	if f.HasDevKey() {
		log.Warn("the development API key is configured; remove it outside development", "key", config.DevAPIKey)
	}
	n, err := cluster.StartLogic(cluster.TierConfig{File: f, DataDir: *data, Logger: log, StartupWait: startupWait, Context: ctx})
	if err != nil {
		return err
	}
	log.Info("msync logic started", "logic_http", n.Logic.HTTPAddr().String(), "grpc", n.RPC.Addr().String(),
		"job_embedded", n.Job != nil, "store", f.Store.Backend, "queue", f.Queue.Backend)
	return waitAndStop(ctx, log, n.Shutdown)
}

const jobUsage = `Usage: msync job -c FILE

Runs job (the push tier) of a cluster: it consumes the push stream from the
queue broker, resolves devices in the shared online directory and pushes to
the comets registered there over gRPC (the list is refreshed every
job.refresh, so comets can join and leave at any time). Needs shared
backends (store.backend cassandra and a broker queue); in the mixed local
layout job runs inside 'msync logic' instead (job.embedded: true).
/healthz and /metrics are served on job.http_addr when set.

Ctrl-C (SIGINT) or SIGTERM stops consuming after the in-flight pushes.
`

func runJob(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("job", jobUsage, stderr)
	cfgPath := fs.String("c", "configs/cluster-job.yaml", "config file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, log, err := loadTier(*cfgPath, stderr)
	if err != nil {
		return err
	}
	n, err := cluster.StartJob(cluster.TierConfig{File: f, Logger: log, StartupWait: startupWait, Context: ctx})
	if err != nil {
		return err
	}
	log.Info("msync job started", "comets", len(n.Comets.IDs()))
	return waitAndStop(ctx, log, n.Shutdown)
}

func loadTier(path string, stderr io.Writer) (*config.File, *slog.Logger, error) {
	f, err := config.Load(path)
	if err != nil {
		return nil, nil, err
	}
	log, err := newLogger(f, stderr)
	if err != nil {
		return nil, nil, err
	}
	return f, log, nil
}

func override(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

// waitAndStop blocks until ctx is done (a signal), then shuts down bounded
// by shutdownTimeout.
func waitAndStop(ctx context.Context, log *slog.Logger, shutdown func(context.Context) error) error {
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return shutdown(sctx)
}

// Package cluster assembles msync tiers in one process: the all-in-one server
// (`msync all`) and the harness end-to-end tests start. Every dependency goes
// through the tiers' Config structs, so nothing here is test-only magic.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/msync/msync/comet"
	"github.com/msync/msync/gateway"
	"github.com/msync/msync/job"
	"github.com/msync/msync/logic"
	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/biz"
	"github.com/msync/msync/pkg/config"
	dirmem "github.com/msync/msync/pkg/directory/memory"
	queuemem "github.com/msync/msync/pkg/queue/memory"
	"github.com/msync/msync/pkg/store/pebble"
	"github.com/msync/msync/web"
)

// Config is what an all-in-one node needs beyond the file.
type Config struct {
	// File is the validated configuration (required).
	File *config.File
	// DataDir overrides File.Store.Dir when set.
	DataDir string
	// Logger; nil discards.
	Logger *slog.Logger
}

// Node is comet + logic + job over one Pebble store and an in-process queue.
type Node struct {
	Store     *pebble.Store
	Queue     *queuemem.Queue
	Directory *dirmem.Directory
	Logic     *logic.Logic
	Comet     *comet.Comet
	Job       *job.Job
	Registry  *prometheus.Registry

	log      *slog.Logger
	pprofSrv *http.Server
	pprofLn  net.Listener
	once     sync.Once
	err      error
}

// Start opens the store and starts every tier; on error everything opened so
// far is closed again.
func Start(cfg Config) (n *Node, err error) {
	f := cfg.File
	if f == nil {
		return nil, errors.New("cluster: Config.File is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := f.Store.Dir
	if cfg.DataDir != "" {
		dir = cfg.DataDir
	}
	bizs, err := biz.NewRegistry(f.Bizs)
	if err != nil {
		return nil, err
	}
	tokens, err := f.Tokens()
	if err != nil {
		return nil, err
	}
	n = &Node{log: log, Registry: prometheus.NewRegistry()}
	n.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	defer undoOnError(&n, &err)

	if n.Store, err = pebble.Open(PebbleConfig(f.Store, dir, log.With("tier", "store"))); err != nil {
		return n, fmt.Errorf("cluster: store: %w", err)
	}
	if n.Queue, err = queuemem.New(queuemem.Config{}); err != nil {
		return n, fmt.Errorf("cluster: queue: %w", err)
	}
	if n.Directory, err = dirmem.New(dirmem.Config{}); err != nil {
		return n, fmt.Errorf("cluster: directory: %w", err)
	}
	// The browser demo at /demo/ on the logic listener. It mints client
	// tokens only in development mode (dev: true; package web).
	demo, err := web.New(web.Config{
		Tokens: tokens, Dev: f.Dev, WSPath: gateway.DefaultWSPath,
		// Called per request: the comet binds after this handler is built.
		WSAddr: func() net.Addr { return n.Comet.Addrs().WS },
		Logger: log.With("tier", "demo"),
	})
	if err != nil {
		return n, err
	}
	lcfg := LogicConfig(f, bizs, tokens, log)
	lcfg.Store, lcfg.Queue, lcfg.Directory = n.Store, n.Queue, n.Directory
	lcfg.Mount = map[string]http.Handler{web.Prefix: demo}
	lcfg.Registerer, lcfg.Gatherer = n.Registry, n.Registry
	if n.Logic, err = logic.New(lcfg); err != nil {
		return n, err
	}
	ccfg, err := CometConfig(f, log)
	if err != nil {
		return n, err
	}
	ccfg.Logic = api.LocalLogic(n.Logic)
	ccfg.Registerer = n.Registry
	if n.Comet, err = comet.New(ccfg); err != nil {
		return n, err
	}
	if n.Job, err = job.New(job.Config{
		Consumer:   n.Queue,
		Directory:  n.Directory,
		Comets:     api.StaticComets{n.Comet.ID(): api.LocalComet(n.Comet)},
		Workers:    f.Job.Workers,
		Logger:     log.With("tier", "job"),
		Registerer: n.Registry,
	}); err != nil {
		return n, err
	}
	// Start order: logic serves comets, job pushes to comets; each Start binds
	// synchronously so addresses are final when Start returns.
	for _, s := range []interface{ Start() error }{n.Logic, n.Comet, n.Job} {
		if err = s.Start(); err != nil {
			return n, err
		}
	}
	if f.Pprof != "" {
		if err = n.startPprof(f.Pprof); err != nil {
			return n, err
		}
	}
	return n, nil
}

func (n *Node) startPprof(addr string) error {
	srv, ln, err := servePprof(addr, n.log)
	if err != nil {
		return err
	}
	n.pprofSrv, n.pprofLn = srv, ln
	return nil
}

// servePprof serves net/http/pprof on addr (the config's `pprof`), plus
// /debug/freeos, which returns freed heap to the OS at once
// (debug.FreeOSMemory): memory benchmarks use it to measure RSS as a
// long-idle process's scavenger would leave it. The caller closes srv.
func servePprof(addr string, log *slog.Logger) (*http.Server, net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("POST /debug/freeos", func(w http.ResponseWriter, _ *http.Request) {
		debug.FreeOSMemory()
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }() // stopped by the caller's Close (Close ends Serve)
	log.Info("pprof listening", "addr", ln.Addr().String())
	return srv, ln, nil
}

// Shutdown stops the tiers in the order that loses nothing: no new publishes
// (logic HTTP first), then connections (comet), then the push stream (job,
// queue), then the store. Idempotent; later calls return the first result.
func (n *Node) Shutdown(ctx context.Context) error {
	n.once.Do(func() {
		var errs []error
		type stopper interface{ Shutdown(context.Context) error }
		var tiers []stopper // only what was created; typed nils would not compare nil
		if n.Logic != nil {
			tiers = append(tiers, n.Logic)
		}
		if n.Comet != nil {
			tiers = append(tiers, n.Comet)
		}
		if n.Job != nil {
			tiers = append(tiers, n.Job)
		}
		if n.Queue != nil {
			tiers = append(tiers, n.Queue)
		}
		if n.Directory != nil {
			tiers = append(tiers, n.Directory)
		}
		for _, s := range tiers {
			if err := s.Shutdown(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		if n.pprofSrv != nil {
			errs = append(errs, n.pprofSrv.Close())
		}
		if n.Store != nil {
			errs = append(errs, n.Store.Close())
		}
		n.err = errors.Join(errs...)
	})
	return n.err
}

// CometTransports sets the WebSocket and TLS listeners of g from the comet
// section (ws_addr, tls): it loads the certificate, so a bad cert_file or
// key_file fails here, at start-up.
func CometTransports(g *gateway.Config, c config.Comet) error {
	g.WSAddr = c.WSAddr
	if !c.TLS.Enabled() {
		return nil
	}
	pair, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
	if err != nil {
		return fmt.Errorf("cluster: comet.tls: %w", err)
	}
	g.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	g.TLSAddr, g.TLSWSAddr = c.TLS.TCPAddr, c.TLS.WSAddr
	return nil
}

package cluster

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/msync/msync/comet"
	"github.com/msync/msync/pkg/config"
)

// Upstreams maps the file's upstreams onto the comet's, sorted by name.
func Upstreams(f *config.File) []comet.Upstream {
	out := make([]comet.Upstream, 0, len(f.Upstreams))
	for name, u := range f.Upstreams {
		h := u.IdentityHeaders
		out = append(out, comet.Upstream{Name: name, URL: u.URL, Timeout: time.Duration(u.Timeout),
			MaxInFlight: u.MaxInFlight, MaxRequestBytes: u.MaxRequestBytes, MaxResponseBytes: u.MaxResponseBytes,
			UserHeader: h.User, DeviceHeader: h.Device, PlatformHeader: h.Platform, AppVersionHeader: h.AppVersion})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ReloadUpstreams re-reads the file at path and replaces c's upstreams. On
// any error (the file does not load, an upstream is refused) c keeps the
// set it has.
func ReloadUpstreams(c *comet.Comet, path string) error {
	f, err := config.Load(path)
	if err != nil {
		return err
	}
	return c.SetUpstreams(Upstreams(f))
}

// ReloadOnHangup reloads c's upstreams from path on every SIGHUP until ctx is
// done. It subscribes before it returns (a SIGHUP after that never kills the
// process) and handles signals on a goroutine that ends with ctx. Only the
// upstreams change: every other setting needs a restart.
func ReloadOnHangup(ctx context.Context, c *comet.Comet, path string, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go watchHangup(ctx, hup, c, path, log)
}

func watchHangup(ctx context.Context, hup chan os.Signal, c *comet.Comet, path string, log *slog.Logger) {
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := ReloadUpstreams(c, path); err != nil {
				log.Error("SIGHUP: upstreams not reloaded, keeping the running set", "config", path, "err", err)
				continue
			}
			log.Info("SIGHUP: upstreams reloaded (other settings need a restart)", "config", path, "upstreams", c.Upstreams())
		}
	}
}

package cluster

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/msync/msync/logic"
	"github.com/msync/msync/pkg/config"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/store"
)

// healthChannel is the channel the store check reads (it never has oplogs).
var healthChannel = oplog.UserChannel("msync-healthz", "probe")

// healthChecks are what /healthz of logic (st set) and job (st nil) check:
// one read of the store, one listing of the comet registry when the
// directory is shared (Cassandra).
func healthChecks(f *config.File, st store.Store, dir dirBackend) []logic.HealthCheck {
	var cs []logic.HealthCheck
	if st != nil {
		cs = append(cs, logic.HealthCheck{Name: "store", Check: func(ctx context.Context) error {
			_, err := st.MaxID(ctx, healthChannel)
			return err
		}})
	}
	if sharedDirectory(f) && dir != nil {
		cs = append(cs, logic.HealthCheck{Name: "directory", Check: func(ctx context.Context) error {
			_, err := dir.Comets(ctx)
			return err
		}})
	}
	return cs
}

// serveHealth answers /healthz of a comet or job: 200 {"status":"ok",
// <check>:"ok"...}, or 503 naming the dependency that is down.
func serveHealth(w http.ResponseWriter, r *http.Request, checks []logic.HealthCheck) {
	out, code := map[string]string{"status": "ok"}, http.StatusOK
	for _, c := range checks {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		err := c.Check(ctx)
		cancel()
		if err != nil {
			out[c.Name], out["status"], code = "down: "+err.Error(), "unavailable", http.StatusServiceUnavailable
		} else {
			out[c.Name] = "ok"
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(out)
}

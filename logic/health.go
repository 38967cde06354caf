package logic

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// HealthCheck is one dependency /healthz reports on: Check returns nil
// while it serves.
type HealthCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// Health bounds: each check gets healthTimeout; results are reused for
// healthCacheFor so a tight probe loop does not load the store; a queue
// failure counts for queueStaleAfter unless a send succeeded since.
const (
	healthTimeout   = 2 * time.Second
	healthCacheFor  = time.Second
	queueStaleAfter = 30 * time.Second
)

// health runs the configured checks and tracks the queue's last outcome.
type health struct {
	checks []HealthCheck

	mu     sync.Mutex
	at     time.Time
	report map[string]string
	down   bool

	queueFail atomic.Pointer[queueFailure] // nil after a successful send
}

type queueFailure struct {
	at  time.Time
	err string
}

// noteQueue records a send's outcome.
func (h *health) noteQueue(err error) {
	if err == nil {
		if h.queueFail.Load() != nil {
			h.queueFail.Store(nil)
		}
		return
	}
	h.queueFail.Store(&queueFailure{at: time.Now(), err: err.Error()})
}

// state returns "ok" or "down: <why>" per dependency, and whether any is down.
func (h *health) state(ctx context.Context) (map[string]string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.report == nil || time.Since(h.at) > healthCacheFor {
		rep, down := map[string]string{}, false
		for _, c := range h.checks {
			cctx, cancel := context.WithTimeout(ctx, healthTimeout)
			err := c.Check(cctx)
			cancel()
			if err != nil {
				rep[c.Name], down = "down: "+err.Error(), true
			} else {
				rep[c.Name] = "ok"
			}
		}
		h.report, h.down, h.at = rep, down, time.Now()
	}
	out := make(map[string]string, len(h.report)+1)
	for k, v := range h.report {
		out[k] = v
	}
	down := h.down
	if f := h.queueFail.Load(); f != nil && time.Since(f.at) < queueStaleAfter {
		// Publishes still succeed (the oplog is stored; devices catch up by
		// sync), so this degrades the report without failing it.
		out["queue"] = "failing: " + f.err
	} else {
		out["queue"] = "ok"
	}
	return out, down
}

// handleHealthz answers 503 with a JSON report, not an error body, when down.
func (l *Logic) handleHealthz(w http.ResponseWriter, r *http.Request) *apiError {
	if l.shutting.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting_down"})
		return nil
	}
	rep, down := l.health.state(r.Context())
	if down {
		rep["status"] = "unavailable"
		writeJSON(w, http.StatusServiceUnavailable, rep)
		return nil
	}
	rep["status"] = "ok"
	writeJSON(w, http.StatusOK, rep)
	return nil
}

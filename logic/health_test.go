package logic_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/logic"
)

func TestHealthzNamesTheDependencyThatIsDown(t *testing.T) {
	var storeDown atomic.Bool
	e := newEnv(t, func(c *logic.Config) {
		c.Health = []logic.HealthCheck{{Name: "store", Check: func(context.Context) error {
			if storeDown.Load() {
				return errors.New("cassandra 127.0.0.1:9042: connection refused")
			}
			return nil
		}}}
	})
	if status, out := e.do("GET", "/healthz", "", ""); status != 200 || out["status"] != "ok" || out["store"] != "ok" || out["queue"] != "ok" {
		t.Fatalf("healthz with everything up = %d %v", status, out)
	}
	storeDown.Store(true)
	var status int
	var out map[string]any
	eventually(t, 5*time.Second, func() bool { // results are cached for 1s
		status, out = e.do("GET", "/healthz", "", "")
		return status == 503
	})
	if out["status"] != "unavailable" || !strings.Contains(out["store"].(string), "down: cassandra 127.0.0.1:9042") {
		t.Fatalf("healthz with the store down = %d %v", status, out)
	}

	// A queue that fails sends degrades the report (publishes still store)
	// without failing it; the next good send clears it.
	storeDown.Store(false)
	e.q.fail.Store(true)
	e.publish(`{"biz":"chat","user":"a","payload":"x"}`)
	eventually(t, 5*time.Second, func() bool {
		status, out = e.do("GET", "/healthz", "", "")
		return status == 200
	})
	if q, _ := out["queue"].(string); !strings.HasPrefix(q, "failing: ") {
		t.Fatalf("healthz after a failed queue send = %d %v, want queue failing", status, out)
	}
	e.q.fail.Store(false)
	e.publish(`{"biz":"chat","user":"a","payload":"y"}`)
	if status, out = e.do("GET", "/healthz", "", ""); out["queue"] != "ok" {
		t.Fatalf("healthz after a good send = %d %v", status, out)
	}
}

func eventually(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, timeout, 20*time.Millisecond, func() error {
		if !cond() {
			return fmt.Errorf("condition not met")
		}
		return nil
	})
}

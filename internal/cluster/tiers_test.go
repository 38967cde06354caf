package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/config"
)

const tierBase = `
secret: tiers-test-secret-0123
dev: true # short test keys
api_keys: [{key: k, bizs: ["*"]}]
logic: {http_addr: 127.0.0.1:0, grpc_addr: 127.0.0.1:0}
comet: {addr: 127.0.0.1:0, grpc_addr: 127.0.0.1:0, http_addr: 127.0.0.1:0}
bizs: [{name: demo, target: user}]
`

func parse(t *testing.T, extra string) *config.File {
	t.Helper()
	f, err := config.Parse([]byte(tierBase + extra))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func stop(t *testing.T, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func TestLayoutErrors(t *testing.T) {
	tests := []struct {
		name  string
		start func() error
		want  error
	}{
		{"standalone job on pebble", func() error {
			_, err := StartJob(TierConfig{File: parse(t, "")})
			return err
		}, ErrLayout},
		{"embedded job started alone", func() error {
			_, err := StartJob(TierConfig{File: parse(t, "job: {embedded: true}\n")})
			return err
		}, ErrLayout},
		{"logic on pebble without its job", func() error {
			_, err := StartLogic(TierConfig{File: parse(t, ""), DataDir: t.TempDir()})
			return err
		}, ErrLayout},
		{"comet without logic_addrs", func() error {
			_, err := StartComet(TierConfig{File: parse(t, "")})
			return err
		}, ErrLayout},
		{"no file", func() error {
			_, err := StartComet(TierConfig{})
			return err
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.start()
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestLogicAndCometOverGRPC starts the mixed layout in-process (the same
// code paths as `msync logic` + `msync comet`): the comet registers through
// logic's Renew at start and job's discovery lists it at once.
func TestLogicAndCometOverGRPC(t *testing.T) {
	f := parse(t, "job: {embedded: true, refresh: 50ms}\n")
	l, err := StartLogic(TierConfig{File: f, DataDir: filepath.Join(t.TempDir(), "data")})
	if err != nil {
		t.Fatal(err)
	}
	defer stop(t, l.Shutdown)
	if l.Job == nil || l.Comets == nil {
		t.Fatal("job.embedded did not start job")
	}
	f.Comet.LogicAddrs = []string{l.RPC.Addr().String()}
	c, err := StartComet(TierConfig{File: f})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if ids, addr := fmt.Sprint(l.Comets.IDs()), l.Comets.Addr("comet-1"); ids != "[comet-1]" || addr != c.Advertised {
			return fmt.Errorf("discovery lists %v (addr %q), want comet-1 at %s", ids, addr, c.Advertised)
		}
		return nil
	})
	resp, err := http.Get("http://" + c.OpsAddr.String() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("comet /healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	stop(t, c.Shutdown)
	stop(t, c.Shutdown) // idempotent
}

type stopCounter struct{ stops int }

func (s *stopCounter) Shutdown(context.Context) error { s.stops++; return nil }

// TestUndoOnError: a Start function that fails shuts down what it started
// and returns no node; one that succeeds leaves its node running.
func TestUndoOnError(t *testing.T) {
	for _, fail := range []bool{false, true} {
		made := &stopCounter{}
		got, err := func() (n *stopCounter, err error) {
			n = made
			defer undoOnError(&n, &err)
			if fail {
				return n, errors.New("boom")
			}
			return n, nil
		}()
		wantStops, wantNode := 0, made
		if fail {
			wantStops, wantNode = 1, nil
		}
		if made.stops != wantStops || got != wantNode || (err != nil) != fail {
			t.Errorf("fail=%v: %d shutdowns, node %p, err %v; want %d shutdowns, node %p", fail, made.stops, got, err, wantStops, wantNode)
		}
	}
}

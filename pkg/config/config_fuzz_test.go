package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse: Parse never panics, fails only with ErrInvalid, and what it
// accepts validates again and parses the same way twice (no hidden state).
// Seeds: the shipped example configs plus YAML edge cases (aliases, tags,
// durations).
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../../configs/*.yaml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	const ok = "secret: 0123456789abcdefgh\napi_keys: [{key: k, bizs: ['*']}]\nbizs: [{name: chat}]\n"
	f.Add([]byte(ok))
	f.Add([]byte(ok + "comet: {heartbeat: 106752d}\n"))
	f.Add([]byte(ok + "comet: {heartbeat: NaNd, renew_interval: -1h}\n"))
	f.Add([]byte("a: &a [*a, *a]\nb: *a\n"))
	f.Add([]byte(ok + "bizs: [{name: chat, ttl: 31d, backlog: 'latest:0'}]\n"))
	f.Add([]byte("secret: !!binary AAAA\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || cfg != nil {
				t.Fatalf("Parse = %v, %v: want ErrInvalid and no file", cfg, err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse accepted a file Validate refuses: %v", err)
		}
		again, err := Parse(data)
		if err != nil || !reflect.DeepEqual(cfg, again) {
			t.Fatalf("second Parse differs: %v", err)
		}
		for name, d := range map[string]Duration{"renew_interval": cfg.Comet.RenewInterval, "job.refresh": cfg.Job.Refresh} {
			if d < 0 {
				t.Fatalf("%s %v accepted", name, d)
			}
		}
	})
}

package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUpstreamsExampleAndDefaults(t *testing.T) {
	f, err := Load("../../configs/msync.yaml")
	if err != nil {
		t.Fatal(err)
	}
	u, ok := f.Upstreams["demo"]
	if !ok || u.URL != "http://127.0.0.1:8080" || f.Comet.MaxRequests != 16 {
		t.Fatalf("example upstreams %+v, max_requests %d", f.Upstreams, f.Comet.MaxRequests)
	}
	f, err = Parse([]byte("secret: 0123456789abcdefgh\ndev: true\napi_keys: [{key: k, bizs: [a]}]\nbizs: [{name: a}]\nupstreams: {s1: {url: 'h2c://127.0.0.1:1'}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Upstream{URL: "h2c://127.0.0.1:1", Timeout: Duration(5 * time.Second), MaxInFlight: 256, MaxRequestBytes: 32 << 10,
		MaxResponseBytes: 256 << 10, IdentityHeaders: IdentityHeaders{"X-Msync-User", "X-Msync-Device", "X-Msync-Platform", "X-Msync-App-Version"}}
	if got := f.Upstreams["s1"]; got != want || f.Comet.MaxRequests != DefaultMaxRequests {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
}

func TestUpstreamsInvalid(t *testing.T) {
	_, err := Parse([]byte(`secret: 0123456789abcdefgh
comet: {max_requests: 1000}
upstreams:
  "bad name": {url: "http://h"}
  noscheme: {url: "127.0.0.1:80"}
  ftp: {url: "ftp://h"}
  big: {url: "http://h", max_request_bytes: 70000}
  neg: {url: "http://h", max_in_flight: -1}
`))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
	for _, w := range []string{"comet.max_requests 1000", `"bad name"`, "upstreams.noscheme.url", "upstreams.ftp.url", "upstreams.big.max_request_bytes", "upstreams.neg"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q: %v", w, err)
		}
	}
}

package config

import (
	"errors"
	"strings"
	"testing"
)

const transportsBase = `secret: 0123456789abcdefgh
dev: true # short test keys
api_keys: [{key: k, bizs: ["*"]}]
bizs: [{name: demo, target: user}]
`

func TestCometWSAddr(t *testing.T) {
	for _, tt := range []struct{ name, comet, want string }{
		{"absent key: default", "", DefaultWSAddr},
		{"explicit empty: off", "comet: {ws_addr: \"\"}\n", ""},
		{"set", "comet: {ws_addr: \"127.0.0.1:9000\"}\n", "127.0.0.1:9000"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse([]byte(transportsBase + tt.comet))
			if err != nil {
				t.Fatal(err)
			}
			if f.Comet.WSAddr != tt.want {
				t.Fatalf("ws_addr %q, want %q", f.Comet.WSAddr, tt.want)
			}
		})
	}
	f, err := Load("../../configs/msync.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if f.Comet.WSAddr != "127.0.0.1:3102" || f.Comet.TLS.Enabled() {
		t.Fatalf("configs/msync.yaml: ws_addr %q, tls %+v", f.Comet.WSAddr, f.Comet.TLS)
	}
}

func TestCometTLS(t *testing.T) {
	ok := "comet: {tls: {cert_file: c.pem, key_file: k.pem, tcp_addr: \":3443\"}}\n"
	f, err := Parse([]byte(transportsBase + ok))
	if err != nil {
		t.Fatal(err)
	}
	if !f.Comet.TLS.Enabled() || f.Comet.TLS.TCPAddr != ":3443" {
		t.Fatalf("tls %+v", f.Comet.TLS)
	}
	for _, bad := range []string{
		"comet: {tls: {tcp_addr: \":3443\"}}\n",                  // no cert
		"comet: {tls: {cert_file: c.pem, ws_addr: \":3444\"}}\n", // no key
		"comet: {tls: {cert_file: c.pem, key_file: k.pem}}\n",    // nothing to serve it on
	} {
		_, err := Parse([]byte(transportsBase + bad))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "comet.tls") {
			t.Errorf("%q: err %v, want a comet.tls error", bad, err)
		}
	}
}

package config

import (
	"path/filepath"
	"strings"
	"testing"
)

const rpcBase = "secret: 0123456789abcdef\ndev: true\napi_keys: [{key: k, bizs: [\"*\"]}]\nbizs: [{name: demo, target: user}]\n"

// TestRPCTLSAndLoopbackDefaults: gRPC defaults to loopback; rpc_tls is a
// folder or three explicit files, never a partial set.
func TestRPCTLSAndLoopbackDefaults(t *testing.T) {
	f, err := Parse([]byte(rpcBase))
	if err != nil {
		t.Fatal(err)
	}
	if f.Comet.GRPCAddr != "127.0.0.1:3103" || f.Logic.GRPCAddr != "127.0.0.1:3112" || f.RPCTLS.Enabled() {
		t.Fatalf("defaults: comet %q logic %q tls %v", f.Comet.GRPCAddr, f.Logic.GRPCAddr, f.RPCTLS.Enabled())
	}
	f, err = Parse([]byte(rpcBase + "rpc_tls: {dir: /c, key_file: /k/own.key}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ca, cert, key := f.RPCTLS.Files("comet-3")
	if ca != filepath.Join("/c", "ca.crt") || cert != filepath.Join("/c", "comet-3.crt") || key != "/k/own.key" {
		t.Fatalf("Files = %s %s %s", ca, cert, key)
	}
	if _, err := Parse([]byte(rpcBase + "rpc_tls: {ca_file: /c/ca.crt}\n")); err == nil || !strings.Contains(err.Error(), "rpc_tls") {
		t.Fatalf("partial rpc_tls = %v, want an error naming rpc_tls", err)
	}
}

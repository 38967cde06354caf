package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msync/msync/pkg/client"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

func TestFormatOplogLine(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		want    string
	}{
		{"utf8 json", []byte(`{"n":3}`), `{"biz":"chat","channel":"chat/u/alice","id":7,"payload":"{\"n\":3}"}` + "\n"},
		{"empty", nil, `{"biz":"chat","channel":"chat/u/alice","id":7,"payload":""}` + "\n"},
		{"unicode", []byte("héllo ✓"), `{"biz":"chat","channel":"chat/u/alice","id":7,"payload":"héllo ✓"}` + "\n"},
		{"binary", []byte{0xff, 0x00, 0x01}, `{"biz":"chat","channel":"chat/u/alice","id":7,"payload_base64":"/wAB"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := formatOplogLine(client.Oplog{Biz: "chat", Channel: "chat/u/alice", ID: 7, Payload: tt.payload})
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Fatalf("got  %s\nwant %s", b, tt.want)
			}
			if strings.Count(string(b), "\n") != 1 {
				t.Fatal("not exactly one line")
			}
		})
	}
}

func TestParseClientFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, c clientConfig)
	}{
		{name: "minimal", args: []string{"--token", "t", "--device", "d", "--biz", "a"}, check: func(t *testing.T, c clientConfig) {
			if c.addr != "127.0.0.1:3101" || c.state != "" || len(c.bizs) != 1 {
				t.Fatalf("defaults: %+v", c)
			}
		}},
		{name: "bizs", args: []string{"--token=t", "--device=d", "--biz=a, b,,c"}, check: func(t *testing.T, c clientConfig) {
			if strings.Join(c.bizs, "|") != "a|b|c" {
				t.Fatalf("bizs %q", c.bizs)
			}
		}},
		{name: "missing all", args: nil, wantErr: "--token, --device, --biz required"},
		{name: "missing biz", args: []string{"--token", "t", "--device", "d", "--biz", " , "}, wantErr: "--biz required"},
		{name: "positional", args: []string{"--token", "t", "--device", "d", "--biz", "a", "extra"}, wantErr: `unexpected argument "extra"`},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			c, err := parseClientFlags(tt.args, &stderr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestClientHelpTellsTheTruth(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := runClient(context.Background(), []string{"--help"}, &stdout, &stderr); err != nil {
		t.Fatalf("--help: %v", err)
	}
	help := stderr.String()
	// Every flag the command defines is documented, and the example only
	// uses flags that exist.
	for _, f := range []string{"-addr", "-token", "-device", "-biz", "-platform", "-app-version", "-state", "-verbose", "127.0.0.1:3101", "Example:", "payload_base64"} {
		if !strings.Contains(help, f) {
			t.Errorf("help lacks %q", f)
		}
	}
	ex := help[strings.Index(help, "Example:"):strings.Index(help, "Flags:")]
	_, err := parseClientFlags(strings.Fields(strings.NewReplacer(`\`, "", `"$(msync token --user alice)"`, "T", "msync client", "").Replace(ex))[1:], io.Discard)
	if err != nil {
		t.Fatalf("the help example does not parse: %v", err)
	}
}

func TestFatalEvent(t *testing.T) {
	we := func(c protocol.Code) error {
		return fmt.Errorf("%w: %w", client.ErrServer, &protocol.WireError{Code: c})
	}
	if fatalEvent(client.Event{Kind: client.EventDisconnected, Err: we(protocol.CodeUnavailable)}) != nil {
		t.Error("1004 must not end the command")
	}
	if fatalEvent(client.Event{Kind: client.EventDisconnected, Err: we(protocol.CodeTokenExpired)}) == nil {
		t.Error("2001 must end the command: the token is fixed")
	}
	if fatalEvent(client.Event{Kind: client.EventStopped, Code: protocol.CodeBadAuth, Err: we(protocol.CodeBadAuth)}) == nil {
		t.Error("stop must end the command")
	}
}

// syncWriter is a bytes.Buffer safe for the handler goroutines and the test.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestRunClientPrintsAndAcks runs the command against a scripted comet.
func TestRunClientPrintsAndAcks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncWriter
	done := make(chan error, 1)
	go func() {
		done <- runClient(ctx, []string{"--addr", ln.Addr().String(), "--token", "tok", "--device", "d1",
			"--biz", "chat", "--state", t.TempDir() + "/points.json"}, &stdout, &stderr)
	}()

	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	read := func() protocol.Frame {
		t.Helper()
		var buf []byte
		hdr := make([]byte, protocol.HeaderSize)
		if _, err := io.ReadFull(r, hdr); err != nil {
			t.Fatal(err)
		}
		h, err := protocol.ParseHeader(hdr, 0)
		if err != nil {
			t.Fatal(err)
		}
		buf = append(hdr, make([]byte, int(h.Length)-protocol.HeaderSize)...)
		if _, err := io.ReadFull(r, buf[protocol.HeaderSize:]); err != nil {
			t.Fatal(err)
		}
		f, _, err := protocol.Decode(buf, 0)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	send := func(b []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	f := read()
	var a pb.Auth
	if f.Op != protocol.OpAuth || protocol.Unmarshal(f, &a) != nil || a.Token != "tok" || a.Device != "d1" {
		t.Fatalf("first frame %s %v", f.Op, &a)
	}
	send(protocol.Encode(protocol.OpAuthReply, f.Seq, &pb.AuthReply{User: "alice", HeartbeatMs: 60000,
		Channels: []*pb.ChannelInfo{{Biz: "chat", Channel: "chat/u/alice"}}}))
	send(protocol.Encode(protocol.OpSync, 0, &pb.Sync{Pages: []*pb.ChannelPage{{Channel: "chat/u/alice", Biz: "chat", After: 0, Upto: 2,
		Oplogs: []*pb.Oplog{{Id: 1, Payload: []byte("hi")}, {Id: 2, Payload: []byte{0xff}}}}}}))
	f = read()
	var ack pb.Ack
	if f.Op != protocol.OpAck || protocol.Unmarshal(f, &ack) != nil || ack.Points[0].Id != 2 {
		t.Fatalf("want ACK 2, got %s %v", f.Op, &ack)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("runClient: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("runClient did not return after cancel")
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	want := []string{
		`{"biz":"chat","channel":"chat/u/alice","id":1,"payload":"hi"}`,
		`{"biz":"chat","channel":"chat/u/alice","id":2,"payload_base64":"/w=="}`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stdout:\n%s\nwant:\n%s", stdout.String(), strings.Join(want, "\n"))
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %s", l)
		}
	}
	if !strings.Contains(stderr.String(), "connected") {
		t.Fatalf("stderr lacks the connected event:\n%s", stderr.String())
	}
}

func TestRunClientStopsOnRejectedToken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		done <- runClient(context.Background(), []string{"--addr", ln.Addr().String(), "--token", "old", "--device", "d1", "--biz", "chat"}, io.Discard, io.Discard)
	}()
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 256)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(b); err != nil { // the AUTH frame
		t.Fatal(err)
	}
	_, _ = conn.Write(protocol.ErrorFrame(1, protocol.CodeTokenExpired, "expired"))
	_ = conn.Close()
	select {
	case err := <-done:
		var we *protocol.WireError
		if !errors.As(err, &we) || we.Code != protocol.CodeTokenExpired {
			t.Fatalf("runClient: %v, want the 2001 error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("runClient kept running with a rejected fixed token")
	}
}

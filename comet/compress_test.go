package comet

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

// bigJSON is an oplog payload well above the 1 KiB threshold.
var bigJSON = []byte(`{"order":"ord_1","items":[` + strings.Repeat(`{"sku":"SKU-AAA-01","name":"Organic green tea, 100 g","qty":2},`, 40) + `{}]}`)

// authCompressed authenticates offering algs and returns the reply.
func (cl *client) authCompressed(token, device string, algs ...string) *wirepb.AuthReply {
	cl.t.Helper()
	cl.sendMsg(protocol.OpAuth, &wirepb.Auth{Token: token, Device: device, Platform: "ios", AppVersion: "1.0",
		Bizs: []string{"chat"}, Compression: algs})
	var r wirepb.AuthReply
	cl.expect(protocol.OpAuthReply, &r)
	return &r
}

// nextInflated reads a frame, reports whether it was compressed, and
// returns it decompressed.
func (cl *client) nextInflated() (protocol.Frame, bool) {
	cl.t.Helper()
	f := cl.next()
	g, err := protocol.Inflate(f, protocol.DefaultMaxFrame*64)
	if err != nil {
		cl.t.Fatalf("inflate %#x: %v", uint32(f.Op), err)
	}
	return g, f.Compressed()
}

func deflateRaw(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestCompression)
	_, _ = w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCompressionNegotiatedSyncAndPush(t *testing.T) {
	e := newEnv(t, nil)
	backlog := e.logic.add(chatAlice, &oplog.Oplog{Payload: bigJSON})
	cl := e.dial()
	if r := cl.authCompressed("good-alice", "dev1", "zstd", protocol.CompressionDeflate); r.Compression != protocol.CompressionDeflate {
		t.Fatalf("AUTH_REPLY compression %q, want deflate", r.Compression)
	}
	// A backlog page with a big oplog arrives compressed and decodes exactly.
	f, compressed := cl.nextInflated()
	var s wirepb.Sync
	if err := protocol.Unmarshal(f, &s); err != nil || f.Op != protocol.OpSync || !compressed {
		t.Fatalf("backlog: %s compressed=%v err=%v", f.Op, compressed, err)
	}
	if got := s.Pages[0].Oplogs[0].Payload; !bytes.Equal(got, bigJSON) || s.Pages[0].Oplogs[0].Id != backlog.Id {
		t.Fatalf("backlog payload differs: %d bytes", len(got))
	}
	cl.ack(chatAlice, backlog.Id)
	// Live: a small oplog stays plain, a big one is compressed.
	small := e.logic.add(chatAlice, &oplog.Oplog{Payload: []byte(`{"t":"hi"}`)})
	e.c.Push(context.Background(), &pb.PushReq{Items: []*pb.PushItem{{Keys: []string{cl.key}, Oplog: small}}})
	if f, compressed := cl.nextInflated(); compressed || f.Op != protocol.OpSync {
		t.Fatalf("small live page: %s compressed=%v", f.Op, compressed)
	}
	big := e.logic.add(chatAlice, &oplog.Oplog{Payload: bigJSON})
	e.c.Push(context.Background(), &pb.PushReq{Items: []*pb.PushItem{{Keys: []string{cl.key}, Oplog: big}}})
	f, compressed = cl.nextInflated()
	s.Reset()
	if err := protocol.Unmarshal(f, &s); err != nil || !compressed || !bytes.Equal(s.Pages[0].Oplogs[0].Payload, bigJSON) {
		t.Fatalf("big live page: compressed=%v err=%v", compressed, err)
	}
	// PUSH of a room, big: compressed.
	cl.sendMsg(protocol.OpRoomJoin, &wirepb.Room{Room: "lobby"})
	cl.expect(protocol.OpRoomReply, nil)
	e.c.Broadcast(context.Background(), &pb.BroadcastReq{Push: &pb.PushMsg{Room: "lobby", Payload: bigJSON}})
	f, compressed = cl.nextInflated()
	var p wirepb.Push
	if err := protocol.Unmarshal(f, &p); err != nil || f.Op != protocol.OpPush || !compressed || !bytes.Equal(p.Payload, bigJSON) {
		t.Fatalf("push: %s compressed=%v err=%v", f.Op, compressed, err)
	}
	m := e.c.metrics
	if n := counterValue(t, m.zFramesOut); n != 3 {
		t.Fatalf("compressed frames out %v, want 3", n)
	}
	raw, wire := counterValue(t, m.zRawOut), counterValue(t, m.zWireOut)
	if raw < 3*float64(len(bigJSON)) || wire <= 0 || wire > raw/4 {
		t.Fatalf("bytes raw %v wire %v", raw, wire)
	}
}

func TestCompressionNotOfferedOrDisabled(t *testing.T) {
	for name, tc := range map[string]struct {
		disabled bool
		offer    []string
	}{
		"old client offers nothing": {offer: nil},
		"unknown algorithm only":    {offer: []string{"zstd", "br"}},
		"server off switch":         {disabled: true, offer: []string{protocol.CompressionDeflate}},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, func(c *Config, _ *fakeLogic) { c.Compression.Disabled = tc.disabled })
			e.logic.add(chatAlice, &oplog.Oplog{Payload: bigJSON})
			cl := e.dial()
			if r := cl.authCompressed("good-alice", "dev1", tc.offer...); r.Compression != "" {
				t.Fatalf("compression %q chosen", r.Compression)
			}
			f := cl.next()
			if f.Compressed() || f.Op != protocol.OpSync {
				t.Fatalf("got op %#x", uint32(f.Op))
			}
			// A compressed frame from a client that did not negotiate: 4000.
			cl.sendRaw(protocol.OpHeartbeat|protocol.FlagCompressed, deflateRaw(t, nil))
			cl.expectError(protocol.CodeBadFrame)
		})
	}
}

func TestCompressionClientFrames(t *testing.T) {
	e := newEnv(t, nil)
	cl := e.dial()
	cl.authCompressed("good-alice", "dev1", protocol.CompressionDeflate)
	cl.expectQuiet()
	// A compressed ROOM_JOIN is handled like a plain one.
	join, _ := protocol.Encode(protocol.OpRoomJoin, 7, &wirepb.Room{Room: "lobby"})
	cl.sendRaw(protocol.OpRoomJoin|protocol.FlagCompressed, deflateRaw(t, join[protocol.HeaderSize:]))
	var r wirepb.Room
	cl.expect(protocol.OpRoomReply, &r)
	if r.Room != "lobby" {
		t.Fatalf("room reply %q", r.Room)
	}
	m := e.c.metrics
	if n := counterValue(t, m.zFramesIn); n != 1 {
		t.Fatalf("compressed frames in %v", n)
	}
	// Corrupt: 4000.
	bad := e.dial()
	bad.authCompressed("good-bob", "dev2", protocol.CompressionDeflate)
	bad.sendRaw(protocol.OpHeartbeat|protocol.FlagCompressed, []byte{0xff, 0xfe, 0xfd})
	bad.expectError(protocol.CodeBadFrame)
}

func TestCompressionBombRefused(t *testing.T) {
	e := newEnv(t, nil)
	cl := e.dial()
	cl.authCompressed("good-alice", "dev1", protocol.CompressionDeflate)
	// 1 MiB of zeros in about 1 KiB: past the 64 KiB frame limit.
	bomb := deflateRaw(t, make([]byte, 1<<20))
	if len(bomb) > 4<<10 {
		t.Fatalf("bomb is %d bytes", len(bomb))
	}
	cl.sendRaw(protocol.OpRequest|protocol.FlagCompressed, bomb)
	cl.expectError(protocol.CodeInflateTooLarge)
	if n := counterValue(t, e.c.metrics.inflateBombs); n != 1 {
		t.Fatalf("inflate_refused %v", n)
	}
}

func TestCompressionConfig(t *testing.T) {
	for _, cc := range []Compression{{Algorithms: []string{"zstd"}}, {MinBytes: -1}, {Level: 10}} {
		if _, err := (Config{Logic: api.LocalLogic(newFakeLogic()), Compression: cc}).withDefaults(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: %v, want ErrInvalidConfig", cc, err)
		}
	}
}

package comet

import (
	"errors"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/msync/msync/pkg/protocol"
	wirepb "github.com/msync/msync/pkg/protocol/pb"
)

// FuzzSessionFrames sends a session arbitrary frames (any op, any body,
// before or after a valid AUTH), then a HEARTBEAT. Whatever it got, the
// session must answer the HEARTBEAT or close with an ERROR whose code is
// in one of the protocol's classes, never with the "internal error" of a recovered
// panic, and never write a malformed frame (the fake connection panics on
// one).
func FuzzSessionFrames(f *testing.F) {
	auth, _ := protocol.Encode(protocol.OpAuth, 1, &wirepb.Auth{Token: "good-alice", Device: "x", Bizs: []string{"chat", "lock", "nope"}})
	ack, _ := protocol.Encode(protocol.OpAck, 2, &wirepb.Ack{Points: []*wirepb.ChannelPoint{{Channel: "chat/u/alice", Id: 3}}})
	bigAck, _ := protocol.Encode(protocol.OpAck, 3, &wirepb.Ack{Points: []*wirepb.ChannelPoint{{Channel: "chat/u/alice", Id: 1 << 40}}})
	req, _ := protocol.Encode(protocol.OpSyncReq, 4, &wirepb.SyncReq{Points: []*wirepb.ChannelPoint{{Channel: "chat/u/alice", Id: 0}, {Channel: "lock/d/other", Id: 0}}})
	join, _ := protocol.Encode(protocol.OpRoomJoin, 5, &wirepb.Room{Room: "lobby"})
	f.Add(append(append(ack, req...), join...), true)
	f.Add(bigAck, true)
	f.Add(auth, false)
	f.Add(auth, true) // a second AUTH
	f.Add(protocol.AppendFrame(nil, protocol.Op(99), 1, nil), true)
	f.Add(protocol.AppendFrame(nil, protocol.OpAck, 1, []byte{0xff}), true)
	f.Add(protocol.AppendFrame(nil, protocol.OpHeartbeat, 1, nil), false)
	f.Add(protocol.AppendFrame(nil, protocol.OpSync, 1, nil), true) // a server op from the client
	e := newEnv(f, func(c *Config, fl *fakeLogic) { c.Logger = slog.New(slog.DiscardHandler) })
	e.logic.addN("chat/u/alice", 5)
	n := 0
	f.Fuzz(func(t *testing.T, in []byte, authFirst bool) {
		n++
		fc := newFakeConn(uint64(1_000_000 + n))
		s := e.c.open(fc)
		fc.attach(s)
		defer fc.Close(nil, errors.New("fuzz: done"))
		recv := func() (protocol.Frame, bool) {
			select {
			case fr := <-fc.out:
				return fr, true
			case <-time.After(waitFor):
				return protocol.Frame{}, false
			}
		}
		// check returns true when fr ends the session (an ERROR or KICK).
		check := func(fr protocol.Frame) bool {
			switch fr.Op {
			case protocol.OpError:
				var m wirepb.Error
				if err := protocol.Unmarshal(fr, &m); err != nil {
					t.Fatalf("undecodable ERROR: %v", err)
				}
				if c := protocol.Code(m.Code); !knownCode(c) || m.Message == "internal error" {
					t.Fatalf("ERROR %d %q", m.Code, m.Message)
				}
				return true
			case protocol.OpKick:
				return true
			}
			return false
		}
		dev := "dev" + strconv.Itoa(n)
		if authFirst {
			b, _ := protocol.Encode(protocol.OpAuth, 1, &wirepb.Auth{Token: "good-alice", Device: dev, Platform: "ios", AppVersion: "1.0", Bizs: []string{"chat", "lock"}})
			fr, _, _ := protocol.Decode(b, 0)
			s.onFrame(fr)
			for {
				fr, ok := recv()
				if !ok {
					t.Fatal("no AUTH_REPLY")
				}
				if fr.Op == protocol.OpAuthReply {
					break
				}
				if check(fr) {
					t.Fatalf("valid AUTH refused")
				}
			}
		}
		for len(in) > 0 && !fc.isClosed() {
			fr, used, err := protocol.Decode(in, protocol.DefaultMaxFrame)
			if err != nil {
				break
			}
			in = in[used:]
			s.onFrame(protocol.Frame{Op: fr.Op, Seq: fr.Seq, Body: append([]byte(nil), fr.Body...)})
		}
		const marker = 0xFEEDBEEF
		if !fc.isClosed() {
			s.onFrame(protocol.Frame{Op: protocol.OpHeartbeat, Seq: marker})
		}
		for {
			fr, ok := recv()
			if !ok {
				if fc.isClosed() {
					return // closed; its final frame, if any, was checked
				}
				t.Fatal("session neither answered the HEARTBEAT nor closed")
			}
			if check(fr) {
				return
			}
			if fr.Op == protocol.OpHeartbeatReply && fr.Seq == marker {
				return
			}
		}
	})
}

// knownCode: a code in one of the documented classes (reconnect, new
// token, stop), so a client knows what to do.
func knownCode(c protocol.Code) bool {
	return c >= 1000 && c < 3000 || c >= 4000 && c < 5000
}

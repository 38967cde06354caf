package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// stillServes checks the server keeps serving a healthy device after abuse.
func stillServes(t *testing.T, n *node, user string) {
	t.Helper()
	d := dial(t, n)
	d.auth(n.token(t, user), "healthy-"+user, "demo")
	res := n.publish(t, toUser(user, "still here"))
	d.waitGot(1, waitFor)
	if got := d.received(); got[0].ID != res.ID {
		t.Fatalf("healthy device got %+v, want id %d", got, res.ID)
	}
}

func authBody(t *testing.T, token, device string) []byte {
	b, err := protocolMarshal(&pb.Auth{Token: token, Device: device, Platform: "ios", AppVersion: "1.0", Bizs: []string{"demo"}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBadFramesGetTheirErrorThenClose(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	good := n.token(t, "mallory")
	expired := expiredToken(t)
	header := func(length uint32, hlen, version uint16, op protocol.Op) []byte {
		b := binary.BigEndian.AppendUint32(nil, length)
		b = binary.BigEndian.AppendUint16(b, hlen)
		b = binary.BigEndian.AppendUint16(b, version)
		b = binary.BigEndian.AppendUint32(b, uint32(op))
		return binary.BigEndian.AppendUint32(b, 1)
	}
	tests := []struct {
		name string
		run  func(d *device)
		code protocol.Code
	}{
		{"malformed header", func(d *device) { d.write(header(16, 16, 9, protocol.OpAuth)) }, protocol.CodeBadFrame},
		{"length below header", func(d *device) { d.write(header(8, 16, 1, protocol.OpAuth)) }, protocol.CodeBadFrame},
		{"oversized frame", func(d *device) { d.write(header(1<<20, 16, 1, protocol.OpAuth)) }, protocol.CodeFrameTooLarge},
		{"op before auth", func(d *device) { d.send(protocol.OpHeartbeat, nil) }, protocol.CodeNotAuthed},
		{"ack before auth", func(d *device) { d.sendMsg(protocol.OpAck, &pb.Ack{}) }, protocol.CodeNotAuthed},
		{"undecodable auth body", func(d *device) { d.send(protocol.OpAuth, []byte{0xff, 0xff, 0xff}) }, protocol.CodeBadFrame},
		{"bad token", func(d *device) { d.send(protocol.OpAuth, authBody(t, "not-a-token", "m1")) }, protocol.CodeTokenInvalid},
		{"expired token", func(d *device) { d.send(protocol.OpAuth, authBody(t, expired, "m1")) }, protocol.CodeTokenExpired},
		{"empty device id", func(d *device) { d.send(protocol.OpAuth, authBody(t, good, "")) }, protocol.CodeBadAuth},
		{"unknown op after auth", func(d *device) { d.auth(good, "m2", "demo"); d.send(protocol.Op(99), nil) }, protocol.CodeUnknownOp},
		{"second auth", func(d *device) { d.auth(good, "m3", "demo"); d.send(protocol.OpAuth, authBody(t, good, "m3")) }, protocol.CodeOutOfOrder},
		{"ack beyond what was sent", func(d *device) {
			d.auth(good, "m4", "demo")
			d.sendMsg(protocol.OpAck, &pb.Ack{Points: []*pb.ChannelPoint{{Channel: oplog.UserChannel("demo", "mallory"), Id: 1000}}})
		}, protocol.CodeOutOfOrder},
		{"sync request for a foreign channel", func(d *device) {
			d.auth(good, "m5", "demo")
			d.sendMsg(protocol.OpSyncReq, &pb.SyncReq{Points: []*pb.ChannelPoint{{Channel: oplog.UserChannel("demo", "alice"), Id: 0}}})
		}, protocol.CodeOutOfOrder},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := dial(t, n)
			d.t = t
			tt.run(d)
			d.expectError(tt.code, 10*time.Second)
		})
	}
	stillServes(t, n, "victor")
}

func (d *device) write(b []byte) {
	if _, err := d.conn.Write(b); err != nil {
		d.t.Fatal(err)
	}
}

func expiredToken(t *testing.T) string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject: "mallory", ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Minute)),
	}).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestNoAuthWithinTimeoutCloses(t *testing.T) {
	t.Parallel()
	n := startNodeWith(t, shortDeadlines(t, testConfig), "")
	d := dial(t, n)
	start := time.Now()
	d.expectError(protocol.CodeAuthTimeout, 5*time.Second) // auth_timeout 1s
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Fatalf("closed after %v, before the 1s auth timeout", el)
	}
	stillServes(t, n, "walter")
}

func TestHeartbeatsKeepSessionAndMissesCloseIt(t *testing.T) {
	t.Parallel()
	n := startNodeWith(t, shortDeadlines(t, testConfig), "")
	alive := dial(t, n)
	reply := alive.auth(n.token(t, "hb"), "beating", "demo")
	silent := dial(t, n)
	silent.auth(n.token(t, "hb"), "silent", "demo")

	interval := time.Duration(reply.HeartbeatMs) * time.Millisecond
	alive.send(protocol.OpHeartbeat, nil)
	var hb pb.HeartbeatReply
	if err := protocol.Unmarshal(alive.expect(protocol.OpHeartbeatReply, 5*time.Second), &hb); err != nil || hb.IntervalMs != reply.HeartbeatMs {
		t.Fatalf("heartbeat reply %v %v", &hb, err)
	}
	alive.heartbeatEvery(interval / 2)
	// Deadline is 3 x interval + 5s after the last frame.
	silent.expectError(protocol.CodeHeartbeatTimeout, 3*interval+10*time.Second)
	n.publish(t, toUser("hb", "after"))
	alive.waitGot(1, waitFor)
}

// TestSlowReaderIsDisconnectedAndLosesNothing: a device that stops reading
// overflows its bounded write queue and is closed; other devices are not
// affected, and on reconnect it gets everything from its sync point.
func TestSlowReaderIsDisconnectedAndLosesNothing(t *testing.T) {
	t.Parallel()
	// Short deadlines: the slow device is cut off by them (see below).
	n := startNodeWith(t, shortDeadlines(t, testConfig), "")
	c, err := net.DialTimeout("tcp", n.Comet.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	slow := newDevice(t, c) // its reader is not started: it reads nothing
	slow.auth0(n.token(t, "slowpoke"))
	fast := dial(t, n)
	reply := fast.auth(n.token(t, "slowpoke"), "fast", "demo")
	// The fast device stays alive through the wait below: the connection
	// count then drops only for the slow one.
	fast.heartbeatEvery(time.Duration(reply.HeartbeatMs) * time.Millisecond / 2)

	payload := strings.Repeat("x", 60<<10)
	const total = 200 // ~12 MB: far beyond the 1 MiB queue plus socket buffers
	for i := 1; i <= total; i++ {
		n.publish(t, toUser("slowpoke", fmt.Sprintf("%03d%s", i, payload[3:])))
	}
	fast.waitGot(total, waitFor)
	// The server stops writing to it once its queue is half full (pacing),
	// so it is cut off by its write or heartbeat deadline (about 10-20 s),
	// not necessarily by an overflow: wait for that before reading, or the
	// reader would start acking and turn it into a healthy slow device.
	testutil.Eventually(t, 60*time.Second, 10*time.Millisecond, func() error {
		if c := n.metric(t, "msync_comet_connections", nil); c != 1 {
			return fmt.Errorf("%v connections open, want 1 (the fast device)", c)
		}
		return nil
	})

	go slow.readLoop() // now drain what the server wrote before closing
	slow.expectClosed(waitFor)
	got := len(slow.received())
	if got >= total {
		t.Fatalf("slow device got all %d oplogs: it was never disconnected", got)
	}
	again := slow.reconnect(n)
	again.auth(n.token(t, "slowpoke"), "slow", "demo")
	again.waitGot(total-got, waitFor)
	first := uint64(1)
	if got > 0 {
		first = slow.received()[got-1].ID + 1
	}
	checkInOrder(t, again, oplog.UserChannel("demo", "slowpoke"), first, total, nil)
	t.Logf("slow device read %d before disconnect, %d after reconnect", got, total-got)
}

// auth0 sends AUTH for device "slow" without reading the reply.
func (d *device) auth0(token string) {
	d.sendMsg(protocol.OpAuth, &pb.Auth{Token: token, Device: "slow", Platform: "ios", AppVersion: "1.0", Bizs: []string{"demo"}})
}

func TestHTTPBadInputGetsClearErrorAndStoresNothing(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	url := n.api() + "/v1/sync"
	tests := []struct {
		name   string
		key    string
		body   any
		status int
		code   string
	}{
		{"bad json", "test-key", `{"biz":`, 400, "bad_request"},
		{"unknown field", "test-key", `{"biz":"demo","user":"u","payload":"x","colour":1}`, 400, "bad_request"},
		{"missing api key", "", toUser("u", "x"), 401, "unauthorized"},
		{"wrong api key", "nope", toUser("u", "x"), 401, "unauthorized"},
		{"key not allowed the biz", "demo-only", map[string]any{"biz": "cmd", "device": "d", "payload": "x"}, 403, "forbidden"},
		{"unknown biz", "test-key", map[string]any{"biz": "nope", "user": "u", "payload": "x"}, 404, "unknown_biz"},
		{"missing owner", "test-key", map[string]any{"biz": "demo", "payload": "x"}, 400, "bad_request"},
		{"device owner for a user biz", "test-key", map[string]any{"biz": "demo", "device": "d", "payload": "x"}, 400, "bad_request"},
		{"payload over the limit", "test-key", map[string]any{"biz": "small", "user": "u", "payload": strings.Repeat("y", 17)}, 413, "payload_too_large"},
		{"bad base64", "test-key", map[string]any{"biz": "demo", "user": "u", "payload_base64": "!!"}, 400, "bad_request"},
		{"bad valid_until", "test-key", map[string]any{"biz": "demo", "user": "u", "payload": "x", "valid_until": "tomorrow"}, 400, "bad_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var res publishResult
			if status := call(t, "POST", url, tt.key, tt.body, &res); status != tt.status || res.Error == nil || res.Error.Code != tt.code || res.Error.Message == "" {
				t.Fatalf("status %d error %+v, want %d %q", status, res.Error, tt.status, tt.code)
			}
		})
	}
	// Nothing of the rejected calls was stored: the first good publish is id 1.
	if res := n.publish(t, toUser("u", "good")); res.ID != 1 {
		t.Fatalf("first good publish got id %d", res.ID)
	}
	stillServes(t, n, "yara")
}

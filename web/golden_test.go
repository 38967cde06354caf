package web_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

var update = flag.Bool("update", false, "rewrite sdk/js/testdata/frames.json from pkg/protocol")

// goldenPath holds frames encoded by pkg/protocol that the JS codec tests
// (sdk/js/test/codec.test.js) decode and, for client->server ops, re-encode
// byte for byte.
var goldenPath = filepath.Join("..", "sdk", "js", "testdata", "frames.json")

type goldenFrame struct {
	Name string `json:"name"`
	Op   uint32 `json:"op"`
	Seq  uint32 `json:"seq"`
	// Message is the body in the canonical protobuf JSON mapping with every
	// field present (uint64/int64 as strings, bytes as base64).
	Message json.RawMessage `json:"message"`
	Hex     string          `json:"hex"`
}

func goldenFrames(t *testing.T) []goldenFrame {
	t.Helper()
	type item struct {
		name  string
		op    protocol.Op
		seq   uint32
		m     proto.Message
		extra []byte // raw bytes appended to the body (unknown fields)
	}
	// An unknown field 99 (varint) and 100 (bytes): a newer server may add
	// fields, and the codec must skip them.
	var unknown []byte
	unknown = protowire.AppendTag(unknown, 99, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 1<<40)
	unknown = protowire.AppendTag(unknown, 100, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, []byte("future"))
	items := []item{
		// The test vectors of docs/protocol.md §3.
		{name: "auth-doc", op: protocol.OpAuth, seq: 1, m: &pb.Auth{Token: "tkn", Device: "dev1", Platform: "android",
			AppVersion: "5.12.1", Bizs: []string{"chat"}, Points: []*pb.ChannelPoint{{Channel: "chat/u/alice", Id: 2}}}},
		{name: "heartbeat-doc", op: protocol.OpHeartbeat, seq: 2, m: &pb.Heartbeat{}},
		{name: "heartbeat-reply-doc", op: protocol.OpHeartbeatReply, seq: 2, m: &pb.HeartbeatReply{IntervalMs: 30000}},
		{name: "sync-doc", op: protocol.OpSync, m: &pb.Sync{Pages: []*pb.ChannelPage{{Channel: "chat/u/alice", Biz: "chat",
			After: 2, Upto: 3, Oplogs: []*pb.Oplog{{Id: 3, Payload: []byte("hi")}}, Live: true}}}},
		{name: "ack-doc", op: protocol.OpAck, seq: 3, m: &pb.Ack{Points: []*pb.ChannelPoint{{Channel: "chat/u/alice", Id: 3}}}},
		{name: "error-doc", op: protocol.OpError, m: &pb.Error{Code: 2001, Message: "expired"}},
		// Edge cases.
		{name: "auth-web", op: protocol.OpAuth, seq: 4294967295, m: &pb.Auth{Token: "eyJ.x.y", Device: "dévice-☃",
			Platform: "web", Bizs: []string{"demo", "device-cmd", ""},
			Points: []*pb.ChannelPoint{{Channel: "demo/u/ünï", Id: 9007199254740991}, {Channel: "device-cmd/d/dévice-☃", Id: 0}}}},
		{name: "auth-empty", op: protocol.OpAuth, seq: 1, m: &pb.Auth{}},
		{name: "auth-reply", op: protocol.OpAuthReply, seq: 1, m: &pb.AuthReply{User: "alice", Session: "comet-1/42",
			HeartbeatMs: 2000, Channels: []*pb.ChannelInfo{{Biz: "demo", Channel: "demo/u/alice", From: 7},
				{Biz: "device-cmd", Channel: "device-cmd/d/d1"}},
			Rejected: []*pb.RejectedBiz{{Biz: "nope", Reason: "unknown biz"}}}},
		{name: "sync-multi", op: protocol.OpSync, m: &pb.Sync{Pages: []*pb.ChannelPage{
			{Channel: "demo/u/alice", Biz: "demo", After: 10, Upto: 300, More: true, Skipped: 5, Oplogs: []*pb.Oplog{
				{Id: 11, Payload: []byte{0, 1, 2, 0xff}, CreatedMs: 1763780000123, ValidUntilMs: 1764384800123},
				{Id: 200, CreatedMs: -1},
				{Id: 9007199254740991, Payload: []byte(`{"text":"héllo"}`)},
			}},
			{Channel: "device-cmd/d/d1", Biz: "device-cmd", After: 0, Upto: 0},
		}}},
		{name: "sync-unknown-fields", op: protocol.OpSync, m: &pb.Sync{Pages: []*pb.ChannelPage{{Channel: "demo/u/bob",
			Biz: "demo", After: 1, Upto: 2, Oplogs: []*pb.Oplog{{Id: 2, Payload: []byte("x")}}}}}, extra: unknown},
		{name: "sync-req", op: protocol.OpSyncReq, seq: 77, m: &pb.SyncReq{Points: []*pb.ChannelPoint{{Channel: "demo/u/alice", Id: 41}}}},
		{name: "ack-multi", op: protocol.OpAck, seq: 128, m: &pb.Ack{Points: []*pb.ChannelPoint{{Channel: "a/g", Id: 1 << 35}, {Channel: "b/u/x", Id: 127}}}},
		{name: "kick", op: protocol.OpKick, m: &pb.Kick{Code: 1006, Reason: "replaced"}},
		{name: "error-4005", op: protocol.OpError, seq: 9, m: &pb.Error{Code: 4005, Message: "ack beyond sent"}},
		{name: "push", op: protocol.OpPush, m: &pb.Push{Room: "lobby", Payload: []byte("ping"), CreatedMs: 1763780000000}},
		{name: "push-volatile", op: protocol.OpPush, m: &pb.Push{Biz: "typing", Payload: []byte(`{"who":"bob"}`), CreatedMs: 1763780000001}},
		{name: "auth-heartbeat", op: protocol.OpAuth, seq: 1, m: &pb.Auth{Token: "t", Device: "d", Bizs: []string{"demo"}, HeartbeatMs: 5000}},
		{name: "heartbeat-wish", op: protocol.OpHeartbeat, seq: 6, m: &pb.Heartbeat{IntervalMs: 15000}},
		// RPC (docs/protocol.md §17): the doc's test vectors, then edge cases.
		// Maps have one entry: Go's map order on the wire is unspecified.
		{name: "request-doc", op: protocol.OpRequest, seq: 9, m: &pb.Request{Id: 7, Service: "orders", Path: "/v1/list",
			Headers: map[string]string{"accept": "json"}, Body: []byte(`{}`)}},
		{name: "response-doc", op: protocol.OpResponse, seq: 9, m: &pb.Response{Id: 7, Status: 200,
			Headers: map[string]string{"content-type": "json"}, Body: []byte(`[1]`)}},
		{name: "response-timeout", op: protocol.OpResponse, seq: 10, m: &pb.Response{Id: 8, Status: 603}},
		{name: "auth-reply-rpc", op: protocol.OpAuthReply, seq: 1, m: &pb.AuthReply{User: "alice", Session: "k1", HeartbeatMs: 30000, MaxRequests: 16}},
		// Compression (docs/protocol.md §18): the offer and the choice.
		{name: "auth-compression", op: protocol.OpAuth, seq: 1, m: &pb.Auth{Token: "t", Device: "d", Platform: "web", Bizs: []string{"demo"},
			Compression: []string{"zstd", "deflate"}}},
		{name: "auth-reply-compression", op: protocol.OpAuthReply, seq: 1, m: &pb.AuthReply{User: "alice", Session: "k1", HeartbeatMs: 30000,
			MaxRequests: 16, Compression: "deflate"}},
		{name: "request-full", op: protocol.OpRequest, seq: 4294967295, m: &pb.Request{Id: 4294967295, Service: "u.v-1", Method: "PATCH",
			Path: "/ü?q=☃", Headers: map[string]string{"x-empty": ""}, Body: []byte{0, 0xff}, TimeoutMs: 1500}},
	}
	marshal := protojson.MarshalOptions{EmitUnpopulated: true}
	var out []goldenFrame
	for _, it := range items {
		body, err := proto.Marshal(it.m)
		if err != nil {
			t.Fatal(err)
		}
		body = append(body, it.extra...)
		frame := protocol.AppendFrame(nil, it.op, it.seq, body)
		js, err := marshal.Marshal(it.m)
		if err != nil {
			t.Fatal(err)
		}
		// protojson output is deliberately unstable (random spaces); re-indent
		// it so the committed file only changes when the content does.
		var buf bytes.Buffer
		if err := json.Compact(&buf, js); err != nil {
			t.Fatal(err)
		}
		out = append(out, goldenFrame{Name: it.name, Op: uint32(it.op), Seq: it.seq, Message: buf.Bytes(), Hex: hex.EncodeToString(frame)})
	}
	return out
}

// TestGoldenFrames keeps sdk/js/testdata/frames.json equal to what
// pkg/protocol encodes today; run with -update after a wire change.
func TestGoldenFrames(t *testing.T) {
	frames := goldenFrames(t)
	want, err := json.MarshalIndent(frames, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if *update {
		if err := os.WriteFile(goldenPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (regenerate with: go test ./web -run TestGoldenFrames -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: regenerate with: go test ./web -run TestGoldenFrames -update", goldenPath)
	}
	// The file must also decode back with pkg/protocol, so a hand edit of a
	// hex string cannot go unnoticed.
	for _, f := range frames {
		b, _ := hex.DecodeString(f.Hex)
		fr, n, err := protocol.Decode(b, 0)
		if err != nil || n != len(b) || uint32(fr.Op) != f.Op || fr.Seq != f.Seq {
			t.Fatalf("%s: decode: op %v seq %d n %d err %v", f.Name, fr.Op, fr.Seq, n, err)
		}
	}
}

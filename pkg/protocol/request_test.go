package protocol

import (
	"encoding/hex"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/protocol/pb"
)

// TestRequestVectors pins the byte dumps of docs/protocol.md §17: an SDK in
// another language can use them as test vectors.
func TestRequestVectors(t *testing.T) {
	tests := []struct {
		name string
		op   Op
		seq  uint32
		msg  proto.Message
		hex  string
	}{
		{"request", OpRequest, 9, &pb.Request{Id: 7, Service: "orders", Path: "/v1/list", Headers: map[string]string{"accept": "json"}, Body: []byte(`{}`)},
			"00000038001000010000000f00000009080712066f726465727322082f76312f6c6973742a0e0a0661636365707412046a736f6e32027b7d"},
		{"response", OpResponse, 9, &pb.Response{Id: 7, Status: 200, Headers: map[string]string{"content-type": "json"}, Body: []byte(`[1]`)},
			"00000030001000010000001000000009080710c8011a140a0c636f6e74656e742d7479706512046a736f6e22035b315d"},
		{"response timeout", OpResponse, 10, &pb.Response{Id: 8, Status: uint32(StatusTimeout)},
			"0000001500100001000000100000000a080810db04"},
		{"auth reply max_requests", OpAuthReply, 1, &pb.AuthReply{User: "alice", Session: "k1", HeartbeatMs: 30000, MaxRequests: 16},
			"000000210010000100000002000000010a05616c69636512026b3118b0ea013010"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Encode(tt.op, tt.seq, tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(b); got != tt.hex {
				t.Fatalf("encoded\n%s\nwant\n%s", got, tt.hex)
			}
			want, _ := hex.DecodeString(tt.hex)
			f, n, err := Decode(want, 0)
			if err != nil || n != len(want) || f.Op != tt.op || f.Seq != tt.seq {
				t.Fatalf("Decode = %+v %d %v", f, n, err)
			}
			got := tt.msg.ProtoReflect().New().Interface()
			if err := Unmarshal(f, got); err != nil || !proto.Equal(got, tt.msg) {
				t.Fatalf("decoded %v (%v), want %v", got, err, tt.msg)
			}
		})
	}
	if OpRequest.String() != "REQUEST" || OpResponse.String() != "RESPONSE" || !OpRequest.Known() {
		t.Fatalf("op names: %s %s", OpRequest, OpResponse)
	}
}

func TestCheckRequest(t *testing.T) {
	many := map[string]string{}
	for i := range MaxRequestHeaders + 1 {
		many["h"+strings.Repeat("x", i)] = "v"
	}
	tests := []struct {
		name string
		r    *pb.Request
		ok   bool
	}{
		{"minimal", &pb.Request{Path: "/"}, true},
		{"query", &pb.Request{Method: "GET", Path: "/a/b?x=1&y=..%2f"}, true},
		{"headers", &pb.Request{Path: "/a", Headers: map[string]string{"X-Trace": "abc", "accept": "a/b"}}, true},
		{"bad method", &pb.Request{Method: "TRACE", Path: "/"}, false},
		{"lower method", &pb.Request{Method: "get", Path: "/"}, false},
		{"empty path", &pb.Request{}, false},
		{"relative path", &pb.Request{Path: "a/b"}, false},
		{"absolute url", &pb.Request{Path: "//evil.example/x"}, false},
		{"dotdot", &pb.Request{Path: "/a/../admin"}, false},
		{"backslash", &pb.Request{Path: "/a\\b"}, false},
		{"fragment", &pb.Request{Path: "/a#b"}, false},
		{"space", &pb.Request{Path: "/a b"}, false},
		{"newline", &pb.Request{Path: "/a\r\nHost: x"}, false},
		{"long path", &pb.Request{Path: "/" + strings.Repeat("a", MaxPath)}, false},
		{"too many headers", &pb.Request{Path: "/", Headers: many}, false},
		{"header name", &pb.Request{Path: "/", Headers: map[string]string{"a b": "v"}}, false},
		{"header colon", &pb.Request{Path: "/", Headers: map[string]string{"a:b": "v"}}, false},
		{"hop header", &pb.Request{Path: "/", Headers: map[string]string{"Transfer-Encoding": "chunked"}}, false},
		{"host header", &pb.Request{Path: "/", Headers: map[string]string{"host": "x"}}, false},
		{"crlf value", &pb.Request{Path: "/", Headers: map[string]string{"x": "a\r\nb: c"}}, false},
		{"long value", &pb.Request{Path: "/", Headers: map[string]string{"x": strings.Repeat("v", MaxHeaderValue+1)}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := CheckRequest(tt.r); (err == nil) != tt.ok {
				t.Fatalf("CheckRequest = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	if !StatusTimeout.Retryable() || StatusUnknownService.Retryable() || StatusResponseTooLarge.Retryable() {
		t.Fatal("Retryable")
	}
	if !Status(503).FromUpstream() || StatusUnavailable.FromUpstream() {
		t.Fatal("FromUpstream")
	}
	if !ValidServiceName("orders.v2_x-y") || ValidServiceName("") || ValidServiceName("a/b") || ValidServiceName(strings.Repeat("a", 65)) {
		t.Fatal("ValidServiceName")
	}
}

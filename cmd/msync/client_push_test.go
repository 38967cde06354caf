package main

import (
	"testing"
	"time"

	"github.com/msync/msync/pkg/client"
)

func TestFormatPushLine(t *testing.T) {
	for _, tt := range []struct {
		p    client.Push
		want string
	}{
		{client.Push{Payload: []byte("hi")}, `{"push":"hi"}` + "\n"},
		{client.Push{Room: "lobby", Payload: []byte(`{"a":1}`), Created: time.UnixMilli(1700000000123)},
			`{"push":"{\"a\":1}","room":"lobby","created_ms":1700000000123}` + "\n"},
		{client.Push{Payload: []byte{0xff, 0x00}}, `{"push_base64":"/wA="}` + "\n"},
	} {
		b, err := formatPushLine(tt.p)
		if err != nil || string(b) != tt.want {
			t.Fatalf("formatPushLine(%+v) = %q, %v; want %q", tt.p, b, err, tt.want)
		}
	}
}

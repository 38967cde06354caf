package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/msync/msync/pkg/client"
)

// pushLine is the JSON shape printed per non-persistent push: "push" holds
// the payload (or "push_base64" when it is not UTF-8); "room" is set for a
// room push.
type pushLine struct {
	Push       *string `json:"push,omitempty"`
	PushBase64 *string `json:"push_base64,omitempty"`
	Room       string  `json:"room,omitempty"`
	CreatedMs  int64   `json:"created_ms,omitempty"`
}

// formatPushLine renders p as one JSON line, newline included.
func formatPushLine(p client.Push) ([]byte, error) {
	l := pushLine{Room: p.Room}
	if !p.Created.IsZero() {
		l.CreatedMs = p.Created.UnixMilli()
	}
	if utf8.Valid(p.Payload) {
		s := string(p.Payload)
		l.Push = &s
	} else {
		s := base64.StdEncoding.EncodeToString(p.Payload)
		l.PushBase64 = &s
	}
	b, err := json.Marshal(l)
	if err != nil {
		return nil, fmt.Errorf("client: encode push: %w", err)
	}
	return append(b, '\n'), nil
}

// push writes p as a JSON line; pushes are not acked, so a failed write only
// loses that line.
func (lw *lineWriter) push(p client.Push) {
	b, err := formatPushLine(p)
	if err != nil {
		return
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	_, _ = lw.w.Write(b)
}

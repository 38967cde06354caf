package comet

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// The session logger must carry the same attributes the per-session With
// loggers did: conn and remote always, user and device once authenticated,
// before the record's own attributes.
func TestSessionLoggerAttrs(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s := &session{c: &Comet{log: base}, conn: newFakeConn(7), key: "k7"}
	log := newSessionLogger(s)

	log.Debug("hidden")
	if buf.Len() != 0 {
		t.Fatalf("debug record logged at info level: %q", buf.String())
	}
	log.Info("before auth", "n", 1)
	got := buf.String()
	if !strings.Contains(got, `conn=k7 remote=10.0.0.1:7 n=1`) || strings.Contains(got, "user=") {
		t.Fatalf("before auth: %q", got)
	}

	buf.Reset()
	s.ident.Store(&identity{user: "u1", device: "d1"})
	log.With("extra", "x").Info("after auth", "n", 2)
	got = buf.String()
	if !strings.Contains(got, `extra=x conn=k7 remote=10.0.0.1:7 user=u1 device=d1 n=2`) {
		t.Fatalf("after auth: %q", got)
	}
}

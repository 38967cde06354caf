package comet

import (
	"context"
	"log/slog"
)

// sessionHandler is the slog.Handler behind a session's logger. It adds the
// session's attributes (conn, remote, and user/device once authenticated)
// only when a record is actually logged.
//
// Why not base.With(...): slog's built-in handlers pre-format With attributes
// into a new handler per call, about 0.4 KB per session that an idle session
// holds for nothing (docs/benchmarks.md, conns). Sessions log rarely (open,
// auth, close), so building the attributes per record is the cheaper side.
type sessionHandler struct {
	base slog.Handler
	s    *session
}

// sessionLog is the session itself as the slog.Handler of its logger (base:
// the comet's logger), so a session's logger costs no allocation of its
// own: boxing a pointer in the Handler interface allocates nothing, where a
// sessionHandler value and a *slog.Logger per session were ~48 bytes that
// every idle session held. With/WithGroup (rare) return a sessionHandler.
type sessionLog session

// newSessionLogger returns s's logger, a value kept in the session.
func newSessionLogger(s *session) slog.Logger {
	return *slog.New((*sessionLog)(s))
}

func (h *sessionLog) base() slog.Handler { return h.c.log.Handler() }

func (h *sessionLog) Enabled(ctx context.Context, l slog.Level) bool {
	return h.base().Enabled(ctx, l)
}

func (h *sessionLog) Handle(ctx context.Context, r slog.Record) error {
	return sessionHandler{base: h.base(), s: (*session)(h)}.Handle(ctx, r)
}

func (h *sessionLog) WithAttrs(as []slog.Attr) slog.Handler {
	return sessionHandler{base: h.base().WithAttrs(as), s: (*session)(h)}
}

func (h *sessionLog) WithGroup(name string) slog.Handler {
	return sessionHandler{base: h.base().WithGroup(name), s: (*session)(h)}
}

func (h sessionHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.base.Enabled(ctx, l)
}

func (h sessionHandler) Handle(ctx context.Context, r slog.Record) error {
	// ident is published once by the drain task after AUTH, so reading it
	// from any goroutine that logs is safe; before AUTH it is nil.
	attrs := make([]slog.Attr, 0, 4)
	attrs = append(attrs, slog.String("conn", h.s.key), slog.String("remote", h.s.conn.RemoteAddr()))
	if id := h.s.ident.Load(); id != nil {
		attrs = append(attrs, slog.String("user", id.user), slog.String("device", id.device))
	}
	// The session's attributes go before the record's, as With would put them.
	return h.base.WithAttrs(attrs).Handle(ctx, r)
}

func (h sessionHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return sessionHandler{base: h.base.WithAttrs(as), s: h.s}
}

func (h sessionHandler) WithGroup(name string) slog.Handler {
	return sessionHandler{base: h.base.WithGroup(name), s: h.s}
}

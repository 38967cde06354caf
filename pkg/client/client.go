package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
)

// Handler processes one oplog. Returning nil acknowledges it: the SDK
// advances the channel's sync point and tells the server. Returning an error
// (or panicking) makes the SDK retry the same oplog later; the oplogs after it
// in the channel wait. ctx is cancelled when the connection ends; a handler
// should honour it, because the SDK waits for running handlers before it
// reconnects (that is what keeps one channel's handlers from overlapping).
type Handler func(ctx context.Context, op Oplog) error

// Oplog is one change as the app receives it. An oplog of a non-persistent
// biz (online only, never stored) has ID 0 and no Channel; returning an
// error for it only logs (there is nothing to redeliver).
type Oplog struct {
	Biz        string
	Channel    string
	ID         uint64
	Payload    []byte
	Created    time.Time // zero if the server did not say
	ValidUntil time.Time // zero if it never expires
}

// Client is one device's connection to msync. Create it with New, register
// handlers with RegisterBiz, then Start. All methods are goroutine-safe.
type Client struct {
	addr string
	dial dialFunc
	opts Options
	log  *slog.Logger

	handlers map[string]Handler // written before Start only

	ctx    context.Context // cancelled by Shutdown
	cancel context.CancelCauseFunc
	wake   chan struct{} // cap 1: control state changed
	done   chan struct{} // closed when the loop goroutine exits

	connected atomic.Bool
	zstats    compressCounters // compress.go

	mu struct {
		sync.Mutex
		started, closed bool
		foreground      bool
		userSet         bool // false after ClearUser until UpdateUser
		stopped         bool // a 4xxx code; until UpdateUser
		skipBackoff     bool // Foreground/UpdateUser: connect now
		token           string
		// cancelSession ends the running session, nil when none.
		cancelSession context.CancelCauseFunc
	}

	pmu    sync.Mutex
	points map[string]uint64 // channel -> sync point, mirrors Store

	rooms   roomSet // realtime.go: rooms joined on every connection
	callers callers // call.go: the session calls go to
}

// New returns a Client for the comet at addr: "host:port" (TCP),
// "tls://host:port", "ws://host:port/sub" or "wss://host:port/sub" (TLS
// ones use Options.TLSConfig). It validates
// opts and does no I/O.
func New(addr string, opts Options) (*Client, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	dial, hostport, err := parseAddr(addr, o.TLSConfig)
	if err != nil {
		return nil, err
	}
	c := &Client{
		addr:     hostport,
		dial:     dial,
		opts:     o,
		log:      o.Logger.With("device", o.Device),
		handlers: map[string]Handler{},
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		points:   map[string]uint64{},
	}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	c.mu.foreground = true
	c.mu.userSet = true
	return c, nil
}

// RegisterBiz routes the oplogs of biz to h. Call it before Start.
func (c *Client) RegisterBiz(biz string, h Handler) error {
	if err := oplog.ValidBizName(biz); err != nil {
		return fmt.Errorf("client: register: %w", err)
	}
	if h == nil {
		return fmt.Errorf("%w: nil handler for %s", ErrBadOptions, biz)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.mu.closed:
		return ErrClosed
	case c.mu.started:
		return ErrStarted
	}
	if _, ok := c.handlers[biz]; ok {
		return fmt.Errorf("%w: %s", ErrDuplicateBiz, biz)
	}
	c.handlers[biz] = h
	return nil
}

// Start loads the sync points from the store and starts connecting in a
// goroutine owned by the Client. Connection problems are reported through
// OnEvent and retried, never returned here.
func (c *Client) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.mu.closed:
		return ErrClosed
	case c.mu.started:
		return ErrStarted
	case len(c.handlers) == 0:
		return ErrNoBiz
	}
	pts, err := c.opts.Store.Load()
	if err != nil {
		return fmt.Errorf("client: load sync points: %w", err)
	}
	c.pmu.Lock()
	for ch, id := range pts {
		c.points[ch] = id
	}
	c.pmu.Unlock()
	c.mu.started = true
	go c.loop()
	return nil
}

// Close is Shutdown without a deadline.
func (c *Client) Close() error { return c.Shutdown(context.Background()) }

// Shutdown closes the connection, stops reconnecting and waits for the
// Client's goroutines (running handlers included) until ctx is done. It may
// be called more than once; every call waits.
func (c *Client) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	c.mu.closed = true
	started := c.mu.started
	c.mu.Unlock()
	c.cancel(ErrClosed)
	if !started {
		return nil
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("client: shutdown: %w", ctx.Err())
	}
}

// Connected reports whether a session is authenticated right now.
func (c *Client) Connected() bool { return c.connected.Load() }

// Background closes the connection and stops reconnecting until Foreground,
// like a mobile app does when it leaves the screen: the OS would freeze the
// socket anyway, and the next Foreground resyncs from the sync points.
func (c *Client) Background() {
	c.mu.Lock()
	c.mu.foreground = false
	c.endSessionLocked(ErrBackground)
	c.mu.Unlock()
	c.signal()
}

// Foreground resumes connecting, immediately (no backoff wait).
func (c *Client) Foreground() {
	c.mu.Lock()
	c.mu.foreground = true
	c.mu.skipBackoff = true
	c.mu.Unlock()
	c.signal()
}

// UpdateUser fetches a token from the TokenProvider now (with ctx) and
// reconnects with it, immediately. Call it after a login or a user switch,
// and to resume after ClearUser or a 4xxx stop. It does not wait for the
// connection.
func (c *Client) UpdateUser(ctx context.Context) error {
	if c.isClosed() {
		return ErrClosed
	}
	tok, err := c.opts.TokenProvider(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrToken, err)
	}
	c.mu.Lock()
	c.mu.token = tok
	c.mu.userSet = true
	c.mu.stopped = false
	c.mu.skipBackoff = true
	c.endSessionLocked(ErrUserUpdated)
	c.mu.Unlock()
	c.signal()
	return nil
}

// ClearUser disconnects and stops connecting until UpdateUser, e.g. on
// logout. Sync points are kept: channels are named per user, so another
// user's channels are not affected.
func (c *Client) ClearUser() {
	c.mu.Lock()
	c.mu.userSet = false
	c.mu.token = ""
	c.endSessionLocked(ErrUserCleared)
	c.mu.Unlock()
	c.signal()
}

// SyncPoint returns the highest id of channel the app has processed (0 if
// none). Channel names are those of Oplog.Channel.
func (c *Client) SyncPoint(channel string) uint64 {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	return c.points[channel]
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.closed
}

// endSessionLocked cancels the running session, if any, with cause.
// REQUIRES: c.mu.
func (c *Client) endSessionLocked(cause error) {
	if c.mu.cancelSession != nil {
		c.mu.cancelSession(cause)
	}
}

func (c *Client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Client) emit(e Event) {
	if c.opts.OnEvent != nil {
		c.opts.OnEvent(e)
	}
}

// loop is the Client's one long-lived goroutine: wait until connecting is
// allowed, connect, run the session, decide how long to wait, repeat.
func (c *Client) loop() {
	defer close(c.done)
	var retry time.Duration
	failures := 0
	for {
		if !c.waitRunnable(retry) {
			return
		}
		sctx, cancel, token, ok := c.beginSession()
		if !ok {
			retry = 0
			continue
		}
		var connected time.Duration
		token, err := c.token(sctx, token)
		if err == nil {
			connected, err = c.runSession(sctx, token)
		}
		cancel(nil)
		c.mu.Lock()
		c.mu.cancelSession = nil
		c.mu.Unlock()
		if c.ctx.Err() != nil {
			c.emit(Event{Kind: EventDisconnected, Err: ErrClosed})
			return
		}
		retry, failures = c.afterSession(err, connected, failures)
	}
}

// waitRunnable blocks until the client may connect and retry has elapsed
// (Foreground and UpdateUser cut the wait short). It returns false once the
// client is closed.
func (c *Client) waitRunnable(retry time.Duration) bool {
	var timer <-chan time.Time
	if retry > 0 {
		t := time.NewTimer(retry)
		defer t.Stop()
		timer = t.C
	}
	for {
		c.mu.Lock()
		runnable := !c.mu.closed && c.mu.foreground && c.mu.userSet && !c.mu.stopped
		if c.mu.skipBackoff {
			c.mu.skipBackoff = false
			timer = nil
			retry = 0
		}
		c.mu.Unlock()
		if runnable && retry == 0 {
			return true
		}
		select {
		case <-c.ctx.Done():
			return false
		case <-c.wake:
		case <-timer:
			retry = 0
		}
	}
}

// beginSession registers a cancellable session context, re-checking the
// control state under the lock so a Background racing with the connect is
// never lost.
func (c *Client) beginSession() (context.Context, context.CancelCauseFunc, string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed || !c.mu.foreground || !c.mu.userSet || c.mu.stopped {
		return nil, nil, "", false
	}
	ctx, cancel := context.WithCancelCause(c.ctx)
	c.mu.cancelSession = cancel
	return ctx, cancel, c.mu.token, true
}

// token returns cached, or a fresh token from the provider when there is
// none (first connect, after a 2xxx code).
func (c *Client) token(ctx context.Context, cached string) (string, error) {
	if cached != "" {
		return cached, nil
	}
	tctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	tok, err := c.opts.TokenProvider(tctx)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			return "", cause
		}
		return "", fmt.Errorf("%w: %w", ErrToken, err)
	}
	c.mu.Lock()
	// Do not overwrite a token that UpdateUser or ClearUser set meanwhile;
	// that call also cancelled ctx, so this session ends right away.
	if ctx.Err() == nil {
		c.mu.token = tok
	}
	c.mu.Unlock()
	return tok, nil
}

// afterSession classifies why a session ended, reports it, and returns the
// delay before the next attempt and the updated failure count.
func (c *Client) afterSession(err error, connected time.Duration, failures int) (time.Duration, int) {
	if errors.Is(err, ErrBackground) || errors.Is(err, ErrUserCleared) || errors.Is(err, ErrUserUpdated) {
		c.emit(Event{Kind: EventDisconnected, Err: err})
		return 0, 0
	}
	var we *protocol.WireError
	if errors.As(err, &we) {
		if !we.Code.Reconnect() {
			c.mu.Lock()
			c.mu.stopped = true
			c.mu.Unlock()
			c.log.Error("server refused the session; not reconnecting until UpdateUser", "code", uint32(we.Code), "err", err)
			c.emit(Event{Kind: EventDisconnected, Err: err})
			c.emit(Event{Kind: EventStopped, Err: err, Code: we.Code})
			return 0, 0
		}
		if we.Code.NeedsToken() {
			c.mu.Lock()
			c.mu.token = ""
			c.mu.Unlock()
		}
	}
	// A session that stayed up for a while resets the backoff; one that
	// keeps failing right after AUTH (e.g. two installs with the same
	// device id replacing each other) keeps growing it.
	if connected >= c.opts.BackoffMax {
		failures = 0
	}
	failures++
	retry := backoff(c.opts.BackoffMin, c.opts.BackoffMax, failures)
	c.log.Warn("disconnected", "err", err, "retry_in", retry)
	c.emit(Event{Kind: EventDisconnected, Err: err, RetryIn: retry})
	return retry, failures
}

// point returns channel's sync point and whether one is known.
func (c *Client) point(channel string) (uint64, bool) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	id, ok := c.points[channel]
	return id, ok
}

// rewind moves channel's point back to id and saves it: the server has
// nothing above id (a rewind page, docs/protocol.md §8). Only the channel's
// worker calls it.
func (c *Client) rewind(channel string, id uint64) {
	c.pmu.Lock()
	c.points[channel] = id
	c.pmu.Unlock()
	if err := c.opts.Store.Save(channel, id); err != nil {
		c.log.Error("save sync point", "channel", channel, "id", id, "err", err)
		c.emit(Event{Kind: EventStoreError, Channel: channel, Err: err})
	}
}

// advance moves channel's point to id (never backwards) and saves it. Only
// the channel's worker calls it, so Save calls per channel are ordered.
func (c *Client) advance(channel string, id uint64) {
	c.pmu.Lock()
	if cur, ok := c.points[channel]; ok && cur >= id {
		c.pmu.Unlock()
		return
	}
	c.points[channel] = id
	c.pmu.Unlock()
	if err := c.opts.Store.Save(channel, id); err != nil {
		// The in-memory point still advances, so this process never hands
		// the oplog to the app again; only a restart might (at-least-once,
		// never a loss). Stalling delivery on a full disk would be worse.
		c.log.Error("save sync point", "channel", channel, "id", id, "err", err)
		c.emit(Event{Kind: EventStoreError, Channel: channel, Err: err})
	}
}

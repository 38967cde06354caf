package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// RPC over the connection (docs/protocol.md §17): Call sends a REQUEST on the
// current session and waits for its RESPONSE, matched by id; several calls
// may be in flight, up to the server's AuthReply.max_requests, and answers
// come in any order. Calls never delay the sync path: the read loop hands
// each RESPONSE to its waiting caller without blocking.

// DefaultCallTimeout bounds a Call whose ctx has no deadline.
const DefaultCallTimeout = 10 * time.Second

var (
	// ErrCallLost is returned when the connection ended before the answer
	// came: the upstream may or may not have run the call, so only an
	// idempotent call should be sent again.
	ErrCallLost = errors.New("client: connection lost before the answer")
	// ErrRPCUnsupported is returned when the server does not serve REQUEST
	// (AuthReply.max_requests is 0).
	ErrRPCUnsupported = errors.New("client: server does not serve RPC")
	// ErrBadRequest wraps a request the server would refuse with status 608
	// (protocol.CheckRequest) or one too large for a frame; nothing is sent.
	ErrBadRequest = errors.New("client: bad request")
)

// Request is one call to a service of the server's `upstreams`.
type Request struct {
	Service string
	Method  string // GET, POST (empty: POST), PUT, PATCH, DELETE
	Path    string // appended to the service's base URL; starts with "/"
	Headers map[string]string
	Body    []byte
}

// Response is the upstream's answer (status 100-599).
type Response struct {
	Status  int
	Headers map[string]string
	Body    []byte
}

// CallError is msync's own answer (status 601-609): the upstream did not
// answer. Retryable says whether sending the same call again may work.
type CallError struct {
	Status protocol.Status
	Reason string
}

func (e *CallError) Error() string {
	return fmt.Sprintf("client: call refused: status %d: %s", e.Status, e.Reason)
}

// Retryable reports whether the same call may succeed if sent again.
func (e *CallError) Retryable() bool { return e.Status.Retryable() }

// Call POSTs body to the service's endpoint path method (e.g. "/v1/orders")
// over the connection and returns the upstream's answer. See Do.
func (c *Client) Call(ctx context.Context, service, method string, body []byte) (*Response, error) {
	return c.Do(ctx, &Request{Service: service, Path: method, Body: body})
}

// Do sends r over the connection and waits for the answer until ctx is done
// (DefaultCallTimeout when ctx has no deadline). While disconnected it waits
// for the next session. Errors: *CallError (msync answered), ErrCallLost,
// ErrBadRequest, ErrRPCUnsupported, ErrClosed, or ctx's error.
func (c *Client) Do(ctx context.Context, r *Request) (*Response, error) {
	m := &pb.Request{Service: r.Service, Method: r.Method, Path: r.Path, Headers: r.Headers, Body: r.Body}
	if err := protocol.CheckRequest(m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if n := len(r.Body) + len(r.Path) + len(r.Service) + 1024; n > protocol.DefaultMaxFrame {
		return nil, fmt.Errorf("%w: body of %d bytes does not fit a %d-byte frame", ErrBadRequest, len(r.Body), protocol.DefaultMaxFrame)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultCallTimeout)
		defer cancel()
	}
	s, err := c.callSession(ctx)
	if err != nil {
		return nil, err
	}
	t := &s.calls
	if t.sem == nil {
		return nil, ErrRPCUnsupported
	}
	// A slot is held until the server answers, also when this caller gives
	// up first: the server counts the request until then.
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("client: call: %w", ctx.Err())
	case <-s.ctx.Done():
		return nil, ErrCallLost
	}
	id, ch := t.register()
	if dl, ok := ctx.Deadline(); ok {
		m.TimeoutMs = uint32(max(time.Until(dl)/time.Millisecond, 1))
	}
	m.Id = id
	if err := s.send(protocol.OpRequest, m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCallLost, err)
	}
	select {
	case resp := <-ch:
		st := protocol.Status(resp.Status)
		if !st.FromUpstream() {
			return nil, &CallError{Status: st, Reason: string(resp.Body)}
		}
		return &Response{Status: int(resp.Status), Headers: resp.Headers, Body: resp.Body}, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("client: call: %w", ctx.Err())
	case <-s.ctx.Done():
		return nil, ErrCallLost
	}
}

// callSession returns the authenticated session, waiting for one until ctx
// is done.
func (c *Client) callSession(ctx context.Context) (*session, error) {
	for {
		c.callers.mu.Lock()
		s := c.callers.cur
		if c.callers.ready == nil {
			c.callers.ready = make(chan struct{})
		}
		ready := c.callers.ready
		c.callers.mu.Unlock()
		if s != nil {
			return s, nil
		}
		if c.isClosed() {
			return nil, ErrClosed
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("client: call: not connected: %w", ctx.Err())
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// callers is the session calls go to; ready is closed when one attaches.
type callers struct {
	mu    sync.Mutex
	cur   *session
	ready chan struct{}
}

// callTable is one session's requests in flight.
type callTable struct {
	sem chan struct{} // max_requests slots; nil: the server serves no RPC
	mu  sync.Mutex
	// next is the last id used; ids are never reused while in flight.
	next    uint32
	pending map[uint32]chan *pb.Response
}

func (t *callTable) register() (uint32, chan *pb.Response) {
	ch := make(chan *pb.Response, 1)
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		t.next++
		if _, busy := t.pending[t.next]; t.next != 0 && !busy {
			break
		}
	}
	t.pending[t.next] = ch
	return t.next, ch
}

// attachCalls makes s the session calls go to (after AUTH_REPLY).
func (s *session) attachCalls(maxRequests uint32) {
	if maxRequests > 0 {
		s.calls.sem = make(chan struct{}, maxRequests)
		s.calls.pending = make(map[uint32]chan *pb.Response, maxRequests)
	}
	c := s.c
	c.callers.mu.Lock()
	c.callers.cur = s
	if c.callers.ready != nil {
		close(c.callers.ready)
		c.callers.ready = nil
	}
	c.callers.mu.Unlock()
}

// detachCalls stops routing calls to s; its waiting callers see s.ctx done.
func (s *session) detachCalls() {
	c := s.c
	c.callers.mu.Lock()
	if c.callers.cur == s {
		c.callers.cur = nil
	}
	c.callers.mu.Unlock()
}

// handleResponse hands a RESPONSE to its caller (read loop; never blocks).
func (s *session) handleResponse(f protocol.Frame) error {
	var m pb.Response
	if err := protocol.Unmarshal(f, &m); err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	t := &s.calls
	t.mu.Lock()
	ch, ok := t.pending[m.Id]
	delete(t.pending, m.Id)
	t.mu.Unlock()
	if !ok {
		s.log.Warn("RESPONSE for no request in flight; ignored", "id", m.Id)
		return nil
	}
	<-t.sem
	ch <- &m // buffered, read at most once
	return nil
}

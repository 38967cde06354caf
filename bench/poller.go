package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"github.com/msync/msync/pkg/protocol"
)

// poller reads every session of a load client from one epoll loop instead
// of a goroutine (and its stack and read buffer) per session: what lets one
// machine hold a million sessions (ConnectSpec.Poll). Writes (ACKs,
// heartbeats) still go through the net.Conn. The fd is also in Go's own
// netpoller, which no goroutine waits on; it is non-blocking, so a read
// here never blocks.
type poller struct {
	epfd int
	mu   sync.Mutex // guards byFD and every registered device's pending
	byFD map[int]*device
	h    frameHandler // shared: state between two ACKs, flushed per device
	buf  []byte
	done chan struct{}
}

func newPoller(ctx context.Context) (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	p := &poller{epfd: fd, byFD: map[int]*device{}, buf: make([]byte, 64<<10), done: make(chan struct{})}
	go p.loop(ctx)
	return p, nil
}

// add registers an authenticated session; rest are bytes its handshake's
// reader had already buffered past AUTH_REPLY.
func (p *poller) add(d *device, conn net.Conn, rest []byte) error {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return errors.New("poll: not a TCP connection")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	d.fd = fd
	if len(rest) > 0 {
		if err := p.consume(d, rest); err != nil {
			return err
		}
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd)}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll add: %w", err)
	}
	p.byFD[fd] = d
	return nil
}

// remove unregisters d before its conn is closed (its fd number may be
// reused right after).
func (p *poller) remove(d *device) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeLocked(d)
}

func (p *poller) removeLocked(d *device) {
	if d.fd >= 0 && p.byFD[d.fd] == d {
		_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, d.fd, nil)
		delete(p.byFD, d.fd)
	}
	d.fd, d.pending = -1, nil
}

func (p *poller) loop(ctx context.Context) {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 256)
	for ctx.Err() == nil {
		n, err := syscall.EpollWait(p.epfd, events, 100)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return
		}
		p.mu.Lock()
		for _, ev := range events[:n] {
			d := p.byFD[int(ev.Fd)]
			if d == nil {
				continue
			}
			k, rerr := syscall.Read(int(ev.Fd), p.buf)
			if errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EINTR) {
				continue
			}
			if rerr == nil && k == 0 {
				rerr = errors.New("EOF")
			}
			if rerr == nil {
				rerr = p.consume(d, p.buf[:k])
			}
			if rerr != nil {
				p.drop(ctx, d, rerr)
			}
		}
		p.mu.Unlock()
	}
}

// consume handles every whole frame of d's pending bytes and b, keeps the
// rest for the next read, and answers with one ACK.
func (p *poller) consume(d *device, b []byte) error {
	data := b
	if len(d.pending) > 0 {
		data = append(d.pending, b...)
	}
	for len(data) > 0 {
		f, n, err := protocol.Decode(data, 16<<20)
		if errors.Is(err, protocol.ErrShortFrame) {
			break
		}
		if err != nil {
			return err
		}
		if err := p.h.handle(d, f); err != nil {
			return err
		}
		data = data[n:]
	}
	d.pending = append(d.pending[:0:0], data...) // nil when all was used
	if len(d.pending) == 0 {
		d.pending = nil
	}
	if p.h.unacked > 0 {
		p.h.flush(d)
	}
	return nil
}

// drop ends a session that failed: counted, not redialed (see ConnectSpec.Poll).
func (p *poller) drop(ctx context.Context, d *device, err error) {
	p.removeLocked(d)
	d.closeRaw()
	d.state.Store(stateFailed)
	if ctx.Err() == nil {
		d.lc.drops.Add(1)
		d.lc.noteErr(fmt.Errorf("session dropped: %w", err))
	}
}

// close stops the loop (its ctx must be done) and the epoll descriptor.
func (p *poller) close() {
	<-p.done
	_ = syscall.Close(p.epfd)
}

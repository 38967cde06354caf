package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// The parent drives a load-client child with one JSON ClientCommand per line
// on the child's stdin; the child answers each with one JSON clientReply line
// on stdout. Commands run one at a time.

// ClientCommand is one instruction to a load client.
type ClientCommand struct {
	// Cmd: "connect" (Spec required; returns when every device is
	// authenticated or has given up), "report", "reset" (zero counters and
	// latencies), "disconnect" (close every session, keep sync points) or
	// "quit"; "freeos" returns freed heap to the OS (before RSS is read).
	Cmd  string       `json:"cmd"`
	Spec *ConnectSpec `json:"spec,omitempty"`
}

// ConnectSpec says which devices a load client runs and how.
type ConnectSpec struct {
	Addr   string `json:"addr"`   // comet TCP address (required)
	Secret string `json:"secret"` // token secret (required)
	// SrcIPs are local addresses to dial from, device i using SrcIPs[i%len];
	// empty: the kernel's choice. connect() searches the ephemeral ports of
	// one (source, destination) pair linearly, so keeping each pair well
	// below its ~28k ports keeps connects cheap.
	SrcIPs []string `json:"src_ips"`
	// Devices are Prefix+i for i in [First, First+Count).
	Prefix string `json:"prefix"`
	First  int    `json:"first"`
	Count  int    `json:"count"`
	// User, when set, is every device's user (one multi-device user);
	// empty: each device is its own user.
	User string   `json:"user"`
	Bizs []string `json:"bizs"` // bizs every device registers (required)
	// ExpectBiz/ExpectID: a device counts as synced once its channel of
	// ExpectBiz has sync point >= ExpectID; zero ExpectID: no tracking.
	ExpectBiz string `json:"expect_biz"`
	ExpectID  uint64 `json:"expect_id"`
	// Heartbeat overrides the interval the server tells; zero: the server's.
	Heartbeat time.Duration `json:"heartbeat"`
	// Dialers bounds concurrent handshakes; zero: 256.
	Dialers int `json:"dialers"`
	// AuthTimeout bounds one handshake; zero: 20s. Each device tries up to 5
	// times before it counts as failed.
	AuthTimeout time.Duration `json:"auth_timeout"`
	// Reconnect redials a dropped session with its sync points (what the SDK
	// does), so a drop costs time but never data.
	Reconnect bool `json:"reconnect"`
	// Poll reads every authenticated session from one epoll loop instead of
	// a goroutine each: about 1-2 KB per session instead of ~18 KB (the
	// goroutine's stack and its read buffer), for the million scenario. A
	// session that drops is counted and not redialed.
	Poll bool `json:"poll"`
}

// ClientReport is a load client's counters since the last reset.
type ClientReport struct {
	Connected    int      `json:"connected"`      // sessions authenticated now
	Failed       int      `json:"failed"`         // devices that gave up connecting
	ConnectNs    int64    `json:"connect_ns"`     // duration of the last connect command
	Recv         uint64   `json:"recv"`           // oplogs with a new id
	Dups         uint64   `json:"dups"`           // oplogs at or below the sync point
	Gaps         uint64   `json:"gaps"`           // pages starting after the sync point
	Drops        uint64   `json:"drops"`          // sessions lost after authentication
	Pushes       uint64   `json:"pushes"`         // PUSH frames (non-persistent)
	Synced       int      `json:"synced"`         // devices at ExpectID
	LastSyncedNs int64    `json:"last_synced_ns"` // unix ns when the last device got synced
	Errors       []string `json:"errors,omitempty"`
	Hist         Hist     `json:"hist"` // publish-call -> receive, from payload timestamps
}

type clientReply struct {
	Report *ClientReport `json:"report,omitempty"`
	Error  string        `json:"error,omitempty"`
}

// RaiseFileLimit lifts the soft open-files limit to the hard one and returns
// the new soft limit. Children inherit it.
func RaiseFileLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, err
		}
	}
	return l.Cur, nil
}

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT on a socket dialed from a chosen
// source address: without it bind() picks the ephemeral port before connect
// knows the destination, scanning every bound port, which made 19,000
// connects take 35 s of client system time.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

const ipBindAddressNoPort = 24 // IP_BIND_ADDRESS_NO_PORT, linux/in.h

// RunLoadClient serves ClientCommands from in until "quit", EOF (the parent
// is gone) or ctx ends, then closes every session it opened.
func RunLoadClient(ctx context.Context, in io.Reader, out io.Writer) error {
	if _, err := RaiseFileLimit(); err != nil {
		return fmt.Errorf("%w: rlimit: %w", ErrClients, err)
	}
	if dir := os.Getenv("MSYNC_BENCH_PROFILE_DIR"); dir != "" { // profiling the load client itself
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("loadclient-%d.cpu.prof", os.Getpid())))
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
	}
	lc := &loadClient{}
	lc.ctx, lc.cancel = context.WithCancel(ctx)
	defer lc.close()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	enc := json.NewEncoder(out)
	lines := make(chan []byte)
	go func() { // ends when in reaches EOF (the parent closes it or exits)
		defer close(lines)
		for sc.Scan() {
			select {
			case lines <- append([]byte(nil), sc.Bytes()...):
			case <-lc.ctx.Done():
				return
			}
		}
	}()
	for {
		var line []byte
		select {
		case <-ctx.Done():
			return ctx.Err()
		case l, ok := <-lines:
			if !ok {
				return nil
			}
			line = l
		}
		var cmd ClientCommand
		var rep clientReply
		if err := json.Unmarshal(line, &cmd); err != nil {
			rep.Error = "bad command: " + err.Error()
		} else {
			r, err := lc.do(cmd)
			rep.Report = r
			if err != nil {
				rep.Error = err.Error()
			}
		}
		if err := enc.Encode(rep); err != nil {
			return err
		}
		if cmd.Cmd == "quit" {
			return nil
		}
	}
}

type histShard struct {
	mu sync.Mutex
	h  Hist
}

const histShards = 16

type loadClient struct {
	ctx    context.Context
	cancel context.CancelFunc
	spec   ConnectSpec
	devs   []*device
	hbStop context.CancelFunc
	hbDone chan struct{}
	poll   *poller // Spec.Poll: created at the first such connect
	hbMs   atomic.Int64 // the interval the server told (every session the same)

	connectNs  int64
	recv, dups atomic.Uint64
	gaps       atomic.Uint64
	drops      atomic.Uint64
	pushes     atomic.Uint64
	synced     atomic.Int64
	lastSynced atomic.Int64
	hist       [histShards]histShard
	errMu      sync.Mutex
	errs       []string
}

func (lc *loadClient) noteErr(err error) {
	lc.errMu.Lock()
	defer lc.errMu.Unlock()
	if len(lc.errs) >= 8 {
		return
	}
	s := err.Error()
	for _, e := range lc.errs {
		if e == s {
			return
		}
	}
	lc.errs = append(lc.errs, s)
}

func (lc *loadClient) do(cmd ClientCommand) (*ClientReport, error) {
	switch cmd.Cmd {
	case "connect":
		if cmd.Spec == nil {
			return nil, errors.New("connect: spec required")
		}
		return lc.connect(*cmd.Spec)
	case "report", "quit":
		if cmd.Cmd == "quit" {
			lc.close()
		}
		return lc.report(), nil
	case "reset":
		lc.reset()
		return lc.report(), nil
	case "disconnect":
		lc.disconnect()
		return lc.report(), nil
	case "freeos": // a GC and freed heap back to the OS, before RSS is read
		debug.FreeOSMemory()
		return lc.report(), nil
	}
	return nil, fmt.Errorf("unknown command %q", cmd.Cmd)
}

func (lc *loadClient) reset() {
	lc.recv.Store(0)
	lc.dups.Store(0)
	lc.gaps.Store(0)
	lc.drops.Store(0)
	lc.pushes.Store(0)
	for i := range lc.hist {
		lc.hist[i].mu.Lock()
		lc.hist[i].h = Hist{}
		lc.hist[i].mu.Unlock()
	}
	lc.errMu.Lock()
	lc.errs = nil
	lc.errMu.Unlock()
}

func (lc *loadClient) report() *ClientReport {
	r := &ClientReport{
		ConnectNs: lc.connectNs, Recv: lc.recv.Load(), Dups: lc.dups.Load(), Gaps: lc.gaps.Load(),
		Drops: lc.drops.Load(), Pushes: lc.pushes.Load(), Synced: int(lc.synced.Load()), LastSyncedNs: lc.lastSynced.Load(),
	}
	for _, d := range lc.devs {
		switch d.state.Load() {
		case stateAuthed:
			r.Connected++
		case stateFailed:
			r.Failed++
		}
	}
	for i := range lc.hist {
		lc.hist[i].mu.Lock()
		r.Hist.Merge(lc.hist[i].h)
		lc.hist[i].mu.Unlock()
	}
	lc.errMu.Lock()
	r.Errors = append(r.Errors, lc.errs...)
	lc.errMu.Unlock()
	return r
}

func (lc *loadClient) connect(spec ConnectSpec) (*ClientReport, error) {
	if spec.Addr == "" || spec.Secret == "" || spec.Count <= 0 || len(spec.Bizs) == 0 {
		return nil, errors.New("connect: addr, secret, count and bizs are required")
	}
	if spec.Dialers <= 0 {
		spec.Dialers = 256
	}
	if spec.AuthTimeout <= 0 {
		spec.AuthTimeout = 20 * time.Second
	}
	lc.disconnect() // a new connect replaces the running sessions
	if spec.Poll && lc.poll == nil {
		p, err := newPoller(lc.ctx)
		if err != nil {
			return nil, err
		}
		lc.poll = p
	}
	tokens, err := auth.NewTokens(spec.Secret)
	if err != nil {
		return nil, err
	}
	dialers := []*net.Dialer{{Timeout: spec.AuthTimeout}}
	if len(spec.SrcIPs) > 0 {
		dialers = dialers[:0]
		for _, ip := range spec.SrcIPs {
			src := &net.TCPAddr{IP: net.ParseIP(ip)}
			dialers = append(dialers, &net.Dialer{LocalAddr: src, Timeout: spec.AuthTimeout, Control: bindNoPort})
		}
	}
	same := len(lc.devs) == spec.Count && lc.spec.Prefix == spec.Prefix && lc.spec.First == spec.First
	if !same { // sync points are kept only for the same device range
		lc.devs = make([]*device, spec.Count)
		for i := range lc.devs {
			lc.devs[i] = &device{lc: lc, id: spec.Prefix + strconv.Itoa(spec.First+i), points: map[string]uint64{}, shard: i % histShards, fd: -1}
		}
	}
	lc.spec = spec
	lc.synced.Store(0)
	lc.lastSynced.Store(0)
	sharedTok := ""
	if spec.User != "" {
		if sharedTok, err = tokens.Sign(spec.User, 24*time.Hour); err != nil {
			return nil, err
		}
	}
	// Heartbeats run from before the first dial: a connect of many sessions
	// can take longer than the server's heartbeat deadline, and the first
	// sessions must not time out waiting for the last.
	lc.startHeartbeats()
	sem := make(chan struct{}, spec.Dialers)
	var wg sync.WaitGroup
	start := time.Now()
	for i, d := range lc.devs {
		dialer := dialers[i%len(dialers)]
		d.state.Store(stateDialing)
		d.synced = spec.ExpectID == 0
		d.expectCh = ""
		tok := sharedTok
		if tok == "" {
			if tok, err = tokens.Sign(d.id, 24*time.Hour); err != nil {
				return nil, err
			}
		}
		d.token = tok
		ctx, cancel := context.WithCancel(lc.ctx)
		d.cancel = cancel
		d.done = make(chan struct{})
		wg.Add(1)
		go d.run(ctx, dialer, sem, &wg)
	}
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select { // every device reports its first outcome; bounded by 5 tries
	case <-waited:
	case <-time.After(5*spec.AuthTimeout + 30*time.Second):
		return lc.report(), fmt.Errorf("%w: connect", ErrTimeout)
	}
	lc.connectNs = int64(time.Since(start))
	return lc.report(), nil
}

func (lc *loadClient) startHeartbeats() {
	ctx, cancel := context.WithCancel(lc.ctx)
	lc.hbStop, lc.hbDone = cancel, make(chan struct{})
	go func() { // one goroutine spreads every device's heartbeats over the interval
		defer close(lc.hbDone)
		const tick = 50 * time.Millisecond
		t := time.NewTicker(tick)
		defer t.Stop()
		cursor := 0
		var frame []byte
		frame = protocol.AppendFrame(frame, protocol.OpHeartbeat, 0, nil)
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			n := len(lc.devs)
			iv := lc.spec.Heartbeat
			if iv <= 0 {
				iv = time.Duration(lc.hbMs.Load()) * time.Millisecond
			}
			if iv <= 0 || n == 0 {
				continue
			}
			k := int((int64(n)*int64(tick) + int64(iv) - 1) / int64(iv))
			for i := 0; i < k && i < n; i++ {
				if d := lc.devs[cursor%n]; d.state.Load() == stateAuthed { // never before its AUTH
					d.write(frame)
				}
				cursor++
			}
		}
	}()
}

// disconnect closes every session and waits for their goroutines.
func (lc *loadClient) disconnect() {
	if lc.hbStop != nil {
		lc.hbStop()
		<-lc.hbDone
		lc.hbStop = nil
	}
	for _, d := range lc.devs {
		if d.cancel != nil {
			d.cancel()
			d.closeConn()
		}
	}
	for _, d := range lc.devs {
		if d.done != nil {
			<-d.done
			d.done, d.cancel = nil, nil
		}
		d.state.Store(stateIdle)
	}
}

func (lc *loadClient) close() {
	lc.disconnect()
	lc.cancel()
	if lc.poll != nil {
		lc.poll.close()
		lc.poll = nil
	}
}

const (
	stateIdle int32 = iota
	stateDialing
	stateAuthed
	stateFailed
)

// device is one simulated app: one session at a time, sync points per channel.
type device struct {
	lc     *loadClient
	id     string
	token  string
	shard  int
	cancel context.CancelFunc
	done   chan struct{}
	state  atomic.Int32

	// Owned by the run goroutine.
	points   map[string]uint64 // channel -> sync point
	expectCh string
	synced   bool

	mu   sync.Mutex // guards conn and wbuf: ACKs (reader) and heartbeats (ticker) both write
	conn net.Conn
	wbuf []byte
	seq  uint32

	// Spec.Poll: the session's descriptor in the poller (-1: none) and the
	// bytes of a frame not yet whole; guarded by the poller's mu.
	fd      int
	pending []byte
}

func (d *device) write(frame []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn == nil {
		return
	}
	_ = d.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := d.conn.Write(frame); err != nil {
		_ = d.conn.Close() // the reader sees the error and reconnects
	}
}

func (d *device) writeMsg(op protocol.Op, m proto.Message) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn == nil {
		return
	}
	d.seq++
	b, err := protocol.AppendMessage(d.wbuf[:0], op, d.seq, m)
	if err != nil {
		return
	}
	d.wbuf = b
	_ = d.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := d.conn.Write(b); err != nil {
		_ = d.conn.Close()
	}
}

func (d *device) closeConn() {
	if p := d.lc.poll; p != nil && d.lc.spec.Poll {
		p.remove(d) // before the close: the fd number may be reused at once
	}
	d.closeRaw()
}

// closeRaw closes the connection (the poller has unregistered it).
func (d *device) closeRaw() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != nil {
		_ = d.conn.Close()
	}
}

// run connects (up to 5 tries), reports the first outcome through first,
// then reads until ctx ends, reconnecting when the spec says so.
func (d *device) run(ctx context.Context, dialer *net.Dialer, sem chan struct{}, first *sync.WaitGroup) {
	defer close(d.done)
	spec := &d.lc.spec
	reported := false
	report := func() {
		if !reported {
			reported = true
			first.Done()
		}
	}
	defer report()
	backoff := 200 * time.Millisecond
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if !reported && attempt >= 5 {
			d.state.Store(stateFailed)
			return
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		br, err := d.handshake(ctx, dialer)
		<-sem
		if err != nil {
			if ctx.Err() == nil {
				d.lc.noteErr(err)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
				}
				backoff = min(2*backoff, 2*time.Second)
			}
			continue
		}
		backoff = 200 * time.Millisecond
		if spec.Poll { // the poller reads it from now on; this goroutine ends
			rest, _ := br.Peek(br.Buffered())
			d.mu.Lock()
			conn := d.conn
			d.mu.Unlock()
			if err := d.lc.poll.add(d, conn, rest); err != nil {
				d.lc.noteErr(err)
				d.closeConn()
				continue
			}
			d.state.Store(stateAuthed)
			d.mu.Lock()
			d.wbuf = nil // the AUTH frame's buffer; ACKs are rare here
			d.mu.Unlock()
			return
		}
		d.state.Store(stateAuthed)
		report()
		err = d.read(br)
		d.state.Store(stateDialing)
		if ctx.Err() != nil {
			return
		}
		d.lc.drops.Add(1)
		d.lc.noteErr(fmt.Errorf("session dropped: %w", err))
		if !spec.Reconnect {
			d.state.Store(stateFailed)
			return
		}
	}
}

func (d *device) handshake(ctx context.Context, dialer *net.Dialer) (*bufio.Reader, error) {
	spec := &d.lc.spec
	conn, err := dialer.DialContext(ctx, "tcp", spec.Addr)
	if err != nil {
		return nil, err
	}
	a := &pb.Auth{Token: d.token, Device: d.id, Platform: "android", AppVersion: "1.0.0", Bizs: spec.Bizs}
	for ch, p := range d.points {
		a.Points = append(a.Points, &pb.ChannelPoint{Channel: ch, Id: p})
	}
	d.mu.Lock()
	d.conn = conn
	d.mu.Unlock()
	if ctx.Err() != nil { // disconnect raced the dial: it may have missed conn
		_ = conn.Close()
		return nil, ctx.Err()
	}
	d.writeMsg(protocol.OpAuth, a)
	_ = conn.SetReadDeadline(time.Now().Add(spec.AuthTimeout))
	br := bufio.NewReaderSize(conn, 4096)
	f, buf, err := readFrame(br, nil)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("auth: %w", err)
	}
	if f.Op != protocol.OpAuthReply {
		_ = conn.Close()
		return nil, fmt.Errorf("auth: got %s: %s", f.Op, errorText(f))
	}
	var rep pb.AuthReply
	if err := protocol.Unmarshal(f, &rep); err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = buf
	d.lc.hbMs.Store(int64(rep.HeartbeatMs))
	for _, ch := range rep.Channels {
		if _, ok := d.points[ch.Channel]; !ok {
			d.points[ch.Channel] = ch.From
		}
		if ch.Biz == spec.ExpectBiz {
			d.expectCh = ch.Channel
		}
	}
	d.checkSynced()
	_ = conn.SetReadDeadline(time.Time{})
	return br, nil
}

func errorText(f protocol.Frame) string {
	switch f.Op {
	case protocol.OpError:
		var e pb.Error
		if protocol.Unmarshal(f, &e) == nil {
			return fmt.Sprintf("ERROR %d %s", e.Code, e.Message)
		}
	case protocol.OpKick:
		var k pb.Kick
		if protocol.Unmarshal(f, &k) == nil {
			return fmt.Sprintf("KICK %d %s", k.Code, k.Reason)
		}
	}
	return f.Op.String()
}

// readFrame reads one whole frame, reusing buf for it.
func readFrame(br *bufio.Reader, buf []byte) (protocol.Frame, []byte, error) {
	hdr, err := br.Peek(protocol.HeaderSize)
	if err != nil {
		return protocol.Frame{}, buf, err
	}
	h, err := protocol.ParseHeader(hdr, 16<<20)
	if err != nil {
		return protocol.Frame{}, buf, err
	}
	if cap(buf) < int(h.Length) {
		buf = make([]byte, h.Length)
	}
	buf = buf[:h.Length]
	if _, err := io.ReadFull(br, buf); err != nil {
		return protocol.Frame{}, buf, err
	}
	f, _, err := protocol.Decode(buf, 16<<20)
	return f, buf, err
}

func (d *device) checkSynced() {
	if d.synced || d.expectCh == "" || d.points[d.expectCh] < d.lc.spec.ExpectID {
		return
	}
	d.synced = true
	d.lc.synced.Add(1)
	now := time.Now().UnixNano()
	for { // keep the latest
		old := d.lc.lastSynced.Load()
		if now <= old || d.lc.lastSynced.CompareAndSwap(old, now) {
			break
		}
	}
}

// maxUnacked bounds the SYNC frames a device handles before it ACKs, however
// many more are already buffered.
const maxUnacked = 64

// read handles frames until the connection fails. Like an SDK, it handles
// every frame already buffered before it answers: one ACK (each channel's
// highest point) and one SYNC_REQ (each gapped channel once) for all of them,
// so a burst costs one write, not one per frame. Every oplog is still checked
// against the sync point, so loss (gaps) and duplicates are counted as before.
func (d *device) read(br *bufio.Reader) error {
	var (
		buf []byte
		h   frameHandler
	)
	for {
		f, b, err := readFrame(br, buf)
		buf = b
		if err != nil {
			return err
		}
		if err := h.handle(d, f); err != nil {
			return err
		}
		if h.unacked > 0 && (h.unacked >= maxUnacked || !frameBuffered(br)) {
			h.flush(d)
		}
	}
}

// frameHandler is one session's reading state between two ACKs.
type frameHandler struct {
	sync    pb.Sync
	ack     pb.Ack
	req     pb.SyncReq
	lat     []time.Duration
	unacked int
}

// point returns the entry of channel in pts, appending one if needed.
func point(pts *[]*pb.ChannelPoint, channel string) *pb.ChannelPoint {
	for _, p := range *pts {
		if p.Channel == channel {
			return p
		}
	}
	p := &pb.ChannelPoint{Channel: channel}
	*pts = append(*pts, p)
	return p
}

// handle takes one frame; an error ends the session.
func (h *frameHandler) handle(d *device, f protocol.Frame) error {
	switch f.Op {
	case protocol.OpSync:
		h.sync.Reset()
		if err := protocol.Unmarshal(f, &h.sync); err != nil {
			return err
		}
		now := time.Now()
		h.unacked++
		for _, pg := range h.sync.Pages {
			p := d.points[pg.Channel]
			if pg.After > p { // gap: ask again from our point (protocol rule)
				d.lc.gaps.Add(1)
				point(&h.req.Points, pg.Channel).Id = p
				continue
			}
			for _, op := range pg.Oplogs {
				if op.Id <= p {
					d.lc.dups.Add(1)
					continue
				}
				p = op.Id
				d.lc.recv.Add(1)
				if ts, ok := parseNs(op.Payload); ok {
					h.lat = append(h.lat, now.Sub(time.Unix(0, ts)))
				}
			}
			p = max(p, pg.Upto)
			d.points[pg.Channel] = p
			point(&h.ack.Points, pg.Channel).Id = p
			// A contiguous page after a gapped one of this burst (the
			// server answered an earlier SYNC_REQ): the channel is no
			// longer gapped, and asking again would only bring dups.
			h.req.Points = slices.DeleteFunc(h.req.Points, func(q *pb.ChannelPoint) bool { return q.Channel == pg.Channel })
		}
		d.checkSynced()
	case protocol.OpPush:
		d.lc.pushes.Add(1)
	case protocol.OpHeartbeatReply, protocol.OpRoomReply:
	case protocol.OpError, protocol.OpKick:
		return errors.New(errorText(f))
	default:
		return fmt.Errorf("unexpected %s", f.Op)
	}
	return nil
}

// flush records the latencies and answers with one ACK and one SYNC_REQ.
func (h *frameHandler) flush(d *device) {
	if len(h.lat) > 0 {
		hs := &d.lc.hist[d.shard]
		hs.mu.Lock()
		for _, l := range h.lat {
			hs.h.Add(l)
		}
		hs.mu.Unlock()
		h.lat = h.lat[:0]
	}
	if len(h.ack.Points) > 0 {
		d.writeMsg(protocol.OpAck, &h.ack)
	}
	if len(h.req.Points) > 0 {
		d.writeMsg(protocol.OpSyncReq, &h.req)
	}
	h.ack.Reset()
	h.req.Reset()
	h.unacked = 0
}

// frameBuffered reports whether br already holds a whole frame.
func frameBuffered(br *bufio.Reader) bool {
	if br.Buffered() < protocol.HeaderSize {
		return false
	}
	hdr, err := br.Peek(protocol.HeaderSize)
	if err != nil {
		return false
	}
	h, err := protocol.ParseHeader(hdr, 16<<20)
	return err == nil && int(h.Length) <= br.Buffered()
}

// parseNs reads a payload written by the publisher: decimal unix nanoseconds.
func parseNs(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

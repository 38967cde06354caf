package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"time"
)

// MaxPerClient is the most devices one load-client child runs: the hard
// open-files limit here is 20000 per process, less room for the rest.
const MaxPerClient = 19000

// child is one load-client process.
type child struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Scanner
	first int
	count int
	src   []string
	addr  string // comet this child dials; empty: the spec's Addr
}

// srcPerAddr is how many devices share one source address (see ConnectSpec.SrcIPs).
const srcPerAddr = 2000

// pool is the set of load-client children of one run.
type pool struct {
	kids []*child
}

// startPool starts enough children for n devices (at most perChild each,
// never fewer than procs), each dialing from its own 127.0.x.y address.
// With comet addresses, the number of children is a multiple of their
// count and child i dials comets[i%len], so every comet gets the same
// share of devices (±1 per child).
func startPool(exe string, n, perChild, procs int, comets []string, log io.Writer) (*pool, error) {
	if perChild <= 0 || perChild > MaxPerClient {
		perChild = MaxPerClient
	}
	k := (n + perChild - 1) / perChild
	k = max(k, procs, 1)
	if g := len(comets); g > 1 {
		k = (k + g - 1) / g * g
	}
	p := &pool{}
	first := 0
	for i := 0; i < k; i++ {
		cnt := n / k
		if i < n%k {
			cnt++
		}
		c := &child{first: first, count: cnt}
		if len(comets) > 0 {
			c.addr = comets[i%len(comets)]
		}
		for j := 0; j < (cnt+srcPerAddr-1)/srcPerAddr; j++ { // child i dials from 127.(10+i).0.(1+j)
			c.src = append(c.src, fmt.Sprintf("127.%d.0.%d", 10+i%240, 1+j))
		}
		first += cnt
		c.cmd = exec.Command(exe, "bench", "loadclient")
		c.cmd.Stderr = log
		var err error
		if c.in, err = c.cmd.StdinPipe(); err != nil {
			p.stop()
			return nil, err
		}
		out, err := c.cmd.StdoutPipe()
		if err != nil {
			p.stop()
			return nil, err
		}
		c.out = bufio.NewScanner(out)
		c.out.Buffer(make([]byte, 1<<20), 64<<20)
		if err := c.cmd.Start(); err != nil {
			p.stop()
			return nil, fmt.Errorf("%w: start: %w", ErrClients, err)
		}
		p.kids = append(p.kids, c)
	}
	return p, nil
}

func (c *child) call(cmd ClientCommand) (*ClientReport, error) {
	b, _ := json.Marshal(cmd)
	if _, err := c.in.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrClients, cmd.Cmd, err)
	}
	if !c.out.Scan() {
		return nil, fmt.Errorf("%w: %s: child exited: %v", ErrClients, cmd.Cmd, c.out.Err())
	}
	var rep clientReply
	if err := json.Unmarshal(c.out.Bytes(), &rep); err != nil {
		return nil, fmt.Errorf("%w: bad reply: %w", ErrClients, err)
	}
	if rep.Error != "" {
		return rep.Report, fmt.Errorf("%w: %s: %s", ErrClients, cmd.Cmd, rep.Error)
	}
	return rep.Report, nil
}

// all sends one command to every child at once (mk builds each child's
// command) and merges the reports.
func (p *pool) all(mk func(c *child) ClientCommand) (ClientReport, error) {
	reps := make([]*ClientReport, len(p.kids))
	errs := make([]error, len(p.kids))
	var wg sync.WaitGroup
	for i, c := range p.kids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reps[i], errs[i] = c.call(mk(c))
		}()
	}
	wg.Wait()
	var sum ClientReport
	for _, r := range reps {
		if r == nil {
			continue
		}
		sum.Connected += r.Connected
		sum.Failed += r.Failed
		sum.ConnectNs = max(sum.ConnectNs, r.ConnectNs)
		sum.Recv += r.Recv
		sum.Dups += r.Dups
		sum.Gaps += r.Gaps
		sum.Drops += r.Drops
		sum.Pushes += r.Pushes
		sum.Synced += r.Synced
		sum.LastSyncedNs = max(sum.LastSyncedNs, r.LastSyncedNs)
		sum.Hist.Merge(r.Hist)
		if len(sum.Errors) < 8 {
			sum.Errors = append(sum.Errors, r.Errors...)
		}
	}
	return sum, errors.Join(errs...)
}

func (p *pool) cmd(name string) (ClientReport, error) {
	return p.all(func(*child) ClientCommand { return ClientCommand{Cmd: name} })
}

// connect runs spec on every child, each with its share of the devices and
// its own source address.
func (p *pool) connect(spec ConnectSpec) (ClientReport, error) {
	return p.all(func(c *child) ClientCommand {
		s := spec
		s.First, s.Count, s.SrcIPs = c.first, c.count, c.src
		if c.addr != "" {
			s.Addr = c.addr
		}
		return ClientCommand{Cmd: "connect", Spec: &s}
	})
}

// waitRecv polls until the children together received want oplogs (and,
// with synced > 0, that many devices are synced) or within passes.
func (p *pool) waitRecv(want uint64, synced int, within time.Duration) (ClientReport, error) {
	deadline := time.Now().Add(within)
	for {
		r, err := p.cmd("report")
		if err != nil {
			return r, err
		}
		if r.Recv >= want && r.Synced >= synced {
			return r, nil
		}
		if time.Now().After(deadline) {
			return r, nil // the caller reports what is missing as lost
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop quits every child (closing their sessions) and waits; a child that
// does not exit within 10s is killed.
func (p *pool) stop() {
	for _, c := range p.kids {
		if c.in != nil {
			_ = c.in.Close() // EOF on stdin: the child closes its sessions and exits
		}
	}
	for _, c := range p.kids {
		if c.cmd.Process == nil {
			continue
		}
		done := make(chan struct{})
		go func() { _ = c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-done
		}
	}
	p.kids = nil
}

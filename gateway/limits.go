package gateway

import (
	"net"
	"net/netip"
	"sync"

	"github.com/msync/msync/pkg/protocol"
)

// ipCounts counts open connections per source address, for
// Config.MaxConnsPerIP. One map under one lock: it is touched once per
// accept and once per close, never per frame, and holds one entry per
// address with a connection open.
type ipCounts struct {
	mu sync.Mutex
	m  map[netip.Addr]int32
}

// addrOf is a's IP, with IPv4-mapped IPv6 unmapped so both spellings of
// one peer count together; the zero Addr when a is not an IP address.
func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// add counts one more connection from a unless limit are open already.
func (ic *ipCounts) add(a net.Addr, limit int) bool {
	ip := addrOf(a)
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if ic.m == nil {
		ic.m = make(map[netip.Addr]int32)
	}
	if int(ic.m[ip]) >= limit {
		return false
	}
	ic.m[ip]++
	return true
}

// remove counts one connection from a out.
func (ic *ipCounts) remove(a net.Addr) {
	ip := addrOf(a)
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if n := ic.m[ip]; n > 1 {
		ic.m[ip] = n - 1
	} else {
		delete(ic.m, ip)
	}
}

// refusal is the ERROR message of a connection refused with code.
func refusal(code protocol.Code) string {
	switch code {
	case protocol.CodeTooManyConns:
		return "server at its connection limit"
	case protocol.CodeTooManyConnsPerIP:
		return "too many connections from this address"
	}
	return "connection refused"
}

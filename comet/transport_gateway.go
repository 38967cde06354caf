package comet

import (
	"fmt"

	"github.com/msync/msync/gateway"
	"github.com/msync/msync/pkg/protocol"
)

// The netpoll gateway is the default transport.
var (
	_ Conn                 = (*gateway.Conn)(nil)
	_ gateway.Handler      = gatewayHandler{}
	_ gateway.DrainHandler = gatewayHandler{}
	_ transport            = (*gateway.Server)(nil)
)

// gatewayHandler routes gateway callbacks to sessions. The gateway calls
// OnOpen, then OnFrame serially per connection, then OnClose exactly once;
// none of them blocks here: frames and closes only enter the session's queue.
type gatewayHandler struct{ c *Comet }

func (h gatewayHandler) OnOpen(gc *gateway.Conn) { gc.SetValue(h.c.open(gc)) }

func (h gatewayHandler) OnFrame(gc *gateway.Conn, f protocol.Frame) {
	if s, ok := gc.Value().(*session); ok {
		s.onFrame(f)
	}
}

// OnDrained resumes a session that held back output (Conn.NotifyDrained).
func (h gatewayHandler) OnDrained(gc *gateway.Conn) {
	if s, ok := gc.Value().(*session); ok {
		s.onDrained()
	}
}

func (h gatewayHandler) OnClose(gc *gateway.Conn, err error) {
	if s, ok := gc.Value().(*session); ok {
		s.onClose(err)
	}
}

// Start starts the comet's worker pool and goroutines (in cluster mode the
// first Logic.Renew registers it), then binds the gateway listener
// (Config.Gateway) and starts serving; Addr is valid when it returns.
func (c *Comet) Start() error {
	c.life.Lock()
	defer c.life.Unlock()
	switch {
	case c.life.shutdown:
		return ErrShutdown
	case c.life.started:
		return ErrStarted
	}
	srv := c.gw
	if err := c.startBackgroundLocked(); err != nil {
		return err
	}
	c.life.started = true // from here Shutdown stops the pool and goroutines
	if err := srv.Start(); err != nil {
		return fmt.Errorf("comet: gateway start: %w", err)
	}
	c.life.transport = srv
	c.limited.gw.Store(srv)
	c.log.Info("comet listening", "addr", srv.Addr().String())
	return nil
}

// Addrs are the bound addresses of the gateway's listeners (TCP, WebSocket,
// TLS, WebSocket over TLS; nil when not configured), or all nil before
// Start. Config.Gateway's WSAddr, TLSAddr and TLSWSAddr turn them on.
func (c *Comet) Addrs() gateway.Addrs {
	c.life.Lock()
	defer c.life.Unlock()
	if srv, ok := c.life.transport.(*gateway.Server); ok {
		return srv.Addrs()
	}
	return gateway.Addrs{}
}

package gateway

// WithClock returns cfg with the deadline wheel reading now (nanoseconds,
// monotonic, > 0) instead of the real clock, so a test moves deadlines past
// by hand.
func WithClock(cfg Config, now func() int64) Config {
	cfg.now = now
	return cfg
}

// AdvanceWheel expires, before it returns, every deadline due by the
// wheel's clock: the tick goroutine does the same every Tick, at a time the
// test does not know.
func AdvanceWheel(s *Server) { s.wheel.Advance(s.wheel.Now()) }

// OnRequestCalls is how many times netpoll has called the server's
// OnRequest: a handler that returns with input left is called again at once,
// so a spin shows as a count that runs away.
func OnRequestCalls(s *Server) uint64 { return s.stats.requests.Load() }

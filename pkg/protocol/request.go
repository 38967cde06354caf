package protocol

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/msync/msync/pkg/protocol/pb"
)

// Status is the status of a RESPONSE frame. 100-599 are the upstream's HTTP
// status, passed through; 600-699 are msync's own, for calls the upstream did
// not answer (docs/protocol.md §17). Only the Retryable ones are worth sending
// again unchanged; none of them closes the connection.
type Status uint32

const (
	StatusUnknownService   Status = 601 // no upstream of that name is configured
	StatusUnavailable      Status = 602 // the upstream refused the connection or broke it; retryable
	StatusTimeout          Status = 603 // no answer within the timeout; retryable (the call may have run)
	StatusTooManyRequests  Status = 604 // the session has max_requests (AUTH_REPLY) in flight; retryable
	StatusServiceBusy      Status = 605 // the service has its max_in_flight calls in flight on this comet; retryable
	StatusRequestTooLarge  Status = 606 // body over the service's max_request_bytes
	StatusResponseTooLarge Status = 607 // the upstream's answer is over the service's max_response_bytes
	StatusBadRequest       Status = 608 // method, path or headers refused (see CheckRequest)
	StatusShuttingDown     Status = 609 // the comet is stopping; retryable after reconnecting
)

// Retryable reports whether a call that got s may be sent again as is.
func (s Status) Retryable() bool {
	switch s {
	case StatusUnavailable, StatusTimeout, StatusTooManyRequests, StatusServiceBusy, StatusShuttingDown:
		return true
	}
	return false
}

// FromUpstream reports whether s is an HTTP status the upstream answered.
func (s Status) FromUpstream() bool { return s >= 100 && s < 600 }

// Limits of a REQUEST frame, checked by CheckRequest on both sides: an SDK
// that checks before sending never gets StatusBadRequest.
const (
	// DefaultMaxRequests is the server's default AuthReply.max_requests.
	DefaultMaxRequests = 16
	MaxRequestHeaders  = 16   // header entries
	MaxHeaderName      = 64   // bytes of one name
	MaxHeaderValue     = 1024 // bytes of one value
	MaxPath            = 2048 // bytes of the path (query included)
	MaxServiceName     = 64   // bytes, [A-Za-z0-9_.-]
)

// hopHeaders may not be set by a client: they belong to the connection
// between the comet and the upstream, which the comet manages.
var hopHeaders = map[string]bool{
	"connection": true, "content-length": true, "host": true, "keep-alive": true, "proxy-authorization": true,
	"proxy-connection": true, "te": true, "trailer": true, "transfer-encoding": true, "upgrade": true,
	"http2-settings": true,
}

// IsHopHeader reports whether the (lower case) name is a hop-by-hop or
// framing header, never forwarded in either direction.
func IsHopHeader(lower string) bool { return hopHeaders[lower] }

// ValidServiceName reports whether s can name an upstream.
func ValidServiceName(s string) bool {
	if s == "" || len(s) > MaxServiceName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// ValidHeaderName reports whether s is an HTTP token (RFC 9110 §5.6.2).
func ValidHeaderName(s string) bool {
	if s == "" || len(s) > MaxHeaderName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// CheckRequest checks what a server refuses with StatusBadRequest: the method,
// the path (starts with "/", no "..", "//", backslash, control characters,
// whitespace or fragment) and the headers (count, token names, no hop-by-hop
// header, values of printable UTF-8 without CR or LF). It does not check the
// service name or the body size, which have their own statuses.
func CheckRequest(r *pb.Request) error {
	switch r.Method {
	case "", "GET", "POST", "PUT", "PATCH", "DELETE":
	default:
		return fmt.Errorf("method %q: want GET, POST, PUT, PATCH or DELETE", r.Method)
	}
	p := r.Path
	if len(p) == 0 || p[0] != '/' || len(p) > MaxPath {
		return fmt.Errorf("path: must start with / and be at most %d bytes", MaxPath)
	}
	route, _, _ := strings.Cut(p, "?")
	if strings.Contains(route, "..") || strings.Contains(route, "//") || strings.ContainsAny(p, "\\#") {
		return fmt.Errorf("path %q: no '..', '//', '\\' or '#'", p)
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] == 0x7f {
			return fmt.Errorf("path: control character or space at byte %d", i)
		}
	}
	if len(r.Headers) > MaxRequestHeaders {
		return fmt.Errorf("headers: %d, at most %d", len(r.Headers), MaxRequestHeaders)
	}
	for k, v := range r.Headers {
		if !ValidHeaderName(k) {
			return fmt.Errorf("header name %q: want an HTTP token of at most %d bytes", k, MaxHeaderName)
		}
		if IsHopHeader(strings.ToLower(k)) {
			return fmt.Errorf("header %q: a hop-by-hop header cannot be set", k)
		}
		if len(v) > MaxHeaderValue || !utf8.ValidString(v) || strings.ContainsAny(v, "\r\n\x00") {
			return fmt.Errorf("header %q: value over %d bytes, not UTF-8 or with CR, LF or NUL", k, MaxHeaderValue)
		}
	}
	return nil
}

package api

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/msync/msync/pkg/protocol"
)

// Error returns an error carrying a wire code that survives both in-process
// calls and gRPC: a status whose message starts "msync-<code>: ". Logic
// returns these for what a device should be told (bad token, bad auth
// fields); comet turns them into ERROR frames with CodeOf.
func Error(code protocol.Code, format string, args ...any) error {
	return status.Error(grpcCode(code), fmt.Sprintf("msync-%d: %s", code, fmt.Sprintf(format, args...)))
}

// CodeOf extracts the wire code and message from err. Errors without one
// (transport failures, timeouts) map to CodeUnavailable: retry later.
func CodeOf(err error) (protocol.Code, string) {
	if err == nil {
		return 0, ""
	}
	var we *protocol.WireError
	if errors.As(err, &we) {
		return we.Code, we.Message
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		if rest, found := strings.CutPrefix(se.GRPCStatus().Message(), "msync-"); found {
			num, msg, _ := strings.Cut(rest, ": ")
			if n, perr := strconv.ParseUint(num, 10, 32); perr == nil {
				return protocol.Code(n), msg
			}
		}
	}
	return protocol.CodeUnavailable, err.Error()
}

func grpcCode(c protocol.Code) codes.Code {
	switch {
	case c.NeedsToken():
		return codes.Unauthenticated
	case c >= 4000:
		return codes.InvalidArgument
	default:
		return codes.Unavailable
	}
}

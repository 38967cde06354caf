package api

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/msync/msync/pkg/protocol"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of the status details that
// carry a wire code between tiers.
const ErrorDomain = "msync.io"

// Error returns an error carrying a wire code that survives both in-process
// calls and gRPC: a status with a google.rpc.ErrorInfo detail
// {domain: ErrorDomain, reason: "CODE_<code>", metadata: {"code": "<code>",
// "message": msg}}. Logic returns these for what a device should be told (bad
// token, bad auth fields); comet turns them into ERROR frames with CodeOf.
//
// The status message still reads "msync-<code>: msg" for one release, only
// so a comet of the previous release (which parses it) keeps the code during
// a rolling upgrade; nothing in this release reads it except CodeOf's
// fallback for a logic of the previous release.
func Error(code protocol.Code, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	c := strconv.FormatUint(uint64(code), 10)
	st := status.New(grpcCode(code), "msync-"+c+": "+msg)
	if ds, err := st.WithDetails(&errdetails.ErrorInfo{
		Domain: ErrorDomain, Reason: "CODE_" + c,
		Metadata: map[string]string{"code": c, "message": msg},
	}); err == nil { // WithDetails fails only for a nil or unmarshalable detail
		st = ds
	}
	return st.Err()
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
		st := se.GRPCStatus()
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
				if n, perr := strconv.ParseUint(info.GetMetadata()["code"], 10, 32); perr == nil {
					return protocol.Code(n), info.GetMetadata()["message"]
				}
			}
		}
		// A logic of the previous release sends the code only in the
		// message. Remove this fallback in the release after this one.
		if rest, found := strings.CutPrefix(st.Message(), "msync-"); found {
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

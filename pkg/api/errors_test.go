package api

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/msync/msync/pkg/protocol"
)

func TestCodeOf(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", Error(protocol.CodeTokenExpired, "token of %s expired", "alice"))
	if code, msg := CodeOf(err); code != protocol.CodeTokenExpired || msg != "token of alice expired" {
		t.Fatalf("CodeOf = %d %q", code, msg)
	}
	if code, _ := CodeOf(context.DeadlineExceeded); code != protocol.CodeUnavailable {
		t.Fatalf("plain error: %d", code)
	}
	if code, _ := CodeOf(protocol.Errorf(protocol.CodeBadAuth, "x")); code != protocol.CodeBadAuth {
		t.Fatalf("wire error: %d", code)
	}
	if code, _ := CodeOf(nil); code != 0 || errors.Is(nil, context.Canceled) {
		t.Fatal("nil")
	}
}

// The code travels as data: a status whose message says nothing still
// yields it, and the detail wins over a (misleading) message prefix.
func TestCodeOfReadsStatusDetails(t *testing.T) {
	st, ok := status.FromError(Error(protocol.CodeDeviceNotAllowed, "device %q", "d1"))
	if !ok {
		t.Fatal("Error is not a status")
	}
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	if info == nil || info.Domain != ErrorDomain || info.Metadata["code"] != "2003" || info.Reason != "CODE_2003" {
		t.Fatalf("details = %v", st.Details())
	}
	// Re-wrap the details under a reworded message.
	reworded, err := status.New(st.Code(), "msync-4000: someone reworded this").WithDetails(info)
	if err != nil {
		t.Fatal(err)
	}
	if code, msg := CodeOf(reworded.Err()); code != protocol.CodeDeviceNotAllowed || msg != `device "d1"` {
		t.Fatalf("CodeOf = %d %q, want 2003 from the details", code, msg)
	}
}

// A logic of the previous release sends only the "msync-<code>: " message.
func TestCodeOfReadsPreviousReleasePrefix(t *testing.T) {
	old := status.Error(codes.Unauthenticated, "msync-2001: token expired")
	if code, msg := CodeOf(old); code != protocol.CodeTokenExpired || msg != "token expired" {
		t.Fatalf("CodeOf = %d %q", code, msg)
	}
	if code, _ := CodeOf(status.Error(codes.Internal, "boom")); code != protocol.CodeUnavailable {
		t.Fatalf("plain status: %d", code)
	}
}

package api

import (
	"context"
	"errors"
	"fmt"
	"testing"

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

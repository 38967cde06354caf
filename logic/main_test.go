package logic_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test shuts down what it started (logic, queue, directory, store);
// goleak checks that nothing they own outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreCurrent()) }

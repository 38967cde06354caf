//go:build race

package e2e

// raceEnabled: the cluster test builds the msync binary with -race too, which
// reuses the race-instrumented packages this test binary was built from.
const raceEnabled = true

// Package bench is msync's load generator: each scenario is a Config struct
// and a Run function returning a result struct (the shape of Pebble's
// bench/bench.go), with no package globals. `msync bench SCENARIO` maps flags
// onto them.
//
// A run measures a server it starts itself as a child process (`msync all`
// with a generated config in a temp dir, on free loopback ports) or one given
// by address. Devices are simulated by load-client child processes (`msync
// bench loadclient`, see RunLoadClient) speaking the raw wire protocol, so
// that many thousands of sockets fit under the per-process open-files limit
// and can use several 127.x source addresses. Every run is bounded in count
// and time and removes what it created.
//
// Nothing in this package is safe for concurrent use unless its comment says
// so; the Run functions may be called one after another.
package bench

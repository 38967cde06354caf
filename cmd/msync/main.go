// Command msync is the one binary of msync: every tier, the device CLI and
// the token tool, as subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `msync — mobile sync service

Usage:
  msync <command> [flags]

Commands:
  all      run comet + logic + job in one process (Pebble store, in-process queue)
  comet    run a comet (connection tier) process of a cluster
  logic    run a logic (API tier) process of a cluster; with job.embedded
           also job (the mixed local cluster: 'make cluster')
  job      run a job (push tier) process of a cluster
  migrate  create the Cassandra schema
  certs    write a development CA and tier certificates (mutual TLS between tiers)
  token    print a client token signed with the config's secret
  client   connect as a device and print received oplogs as JSON lines
  bench    run a load scenario and report figures

Run 'msync <command> --help' for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	default:
		fmt.Fprintln(os.Stderr, "msync:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "all":
		return runAll(ctx, rest, stderr)
	case "comet":
		return runComet(ctx, rest, stderr)
	case "logic":
		return runLogic(ctx, rest, stderr)
	case "job":
		return runJob(ctx, rest, stderr)
	case "migrate":
		return runMigrate(ctx, rest, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, stdout, stderr)
	case "certs":
		return runCerts(rest, stdout, stderr)
	case "token":
		return runToken(rest, stdout, stderr)
	case "client":
		return runClient(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// newFlagSet returns a flag set that reports errors instead of exiting and
// prints the given synopsis above the flags on --help.
func newFlagSet(name, synopsis string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, synopsis)
		fmt.Fprintln(out, "\nFlags:")
		fs.PrintDefaults()
	}
	return fs
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/msync/msync/bench"
)

const benchUsage = `Usage: msync bench SCENARIO [flags]

Load scenarios against a server this command starts (msync all, generated
config, temp dir, free loopback ports) or one given with --addr and --api.
Prints a table, or with --json exactly one JSON object of named figures.

Scenarios:
  conns     -n N [--comets K]                     idle sessions: bytes_per_conn, connect_rate, idle CPU
  heartbeat -n N --interval S [--comets K]        server CPU with N sessions heartbeating
  publish   --rate R --duration D --devices N     durable unicast: delivered_per_s, p50/p99/max, lost
            [--batch B] [--find-max | --rates R1,R2,...]
  fanout    -n N --msgs K [--batch B --workers W]  each message to N devices: deliveries_per_s, p99
  reconnect -n N --backlog B                      reconnect storm: seconds_to_synced, lost, dups
  rpc       [--rate R --duration D --devices N]   RPC over the connection vs calling the upstream directly
            [--body B --workers W]                (default 1000/s, 10s, 10, 256 B, 64): p50/p99 added, max calls/s
  million   -n N [--hold 5m --sample S --interval 30s]  N sessions on N/19000 comets held with 0 drops, then one
            oplog to S of them: RSS per part, sockstat, CPU, connect time (refuses when memory is short)
  soak      [--devices N --oplogs K --kills M]    kill -9 under load (default 500, 100000, 10; --max-time 10m):
            lost, duplicated, out_of_order as the devices' handlers saw them

--comets K (conns, heartbeat) starts a cluster instead of msync all: one
'msync logic' (job embedded, Pebble) and K 'msync comet' processes, devices
spread evenly over the comets (at most 19000 per comet); CPU and RSS are
summed over all server processes and listed per process (each comet also
with its own bytes_per_conn). bytes_per_conn is the RSS delta after a forced
GC; bytes_per_conn_scavenged after also returning freed heap to the OS
(debug.FreeOSMemory), a lower bound.

Examples:
  msync bench publish --rate 20000 --duration 10s --devices 1000 --batch 100 --json
  msync bench heartbeat -n 100000 --comets 6 --interval 30s --window 60s --json
  msync bench rpc --rate 1000 --duration 10s --json
`

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, benchUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return fmt.Errorf("bench: a scenario is required")
	}
	scenario, rest := args[0], args[1:]
	if scenario == "loadclient" { // hidden: a load-client child, driven over stdin/stdout
		return bench.RunLoadClient(ctx, os.Stdin, stdout)
	}
	fs := newFlagSet("bench "+scenario, benchUsage, stderr)
	var (
		common  bench.Common
		asJSON  = fs.Bool("json", false, "print one JSON object instead of a table")
		verbose = fs.Bool("v", false, "progress and children's logs on stderr")
		n       = fs.Int("n", 1000, "sessions / devices")
		rate    = fs.Float64("rate", 10000, "publish: oplogs per second")
		dur     = fs.Duration("duration", 10*time.Second, "publish: duration of one rate step")
		devices = fs.Int("devices", 1000, "publish: online devices")
		batch   = fs.Int("batch", 0, "oplogs per publish call (1 = POST /v1/sync); publish: 100, reconnect: 500, fanout: 1")
		workers = fs.Int("workers", 0, "concurrent publish calls (publish: 32, reconnect: 8, fanout: 1)")
		findMax = fs.Bool("find-max", false, "publish: raise the rate 1.5x per step while sustained")
		rates   = fs.String("rates", "", "publish: comma-separated rate steps (instead of --rate/--find-max), each --duration long")
		msgs    = fs.Int("msgs", 10, "fanout: messages")
		backlog = fs.Int("backlog", 100, "reconnect: oplogs per device published while offline")
		iv      = fs.Duration("interval", 5*time.Second, "heartbeat: server heartbeat interval")
		window  = fs.Duration("window", 0, "conns/heartbeat: CPU measurement window (conns 10s, heartbeat 3 intervals)")
		oplogs  = fs.Int("oplogs", 100000, "soak: oplogs to publish")
		kills   = fs.Int("kills", 10, "soak: kill -9 of the server during publishing")
		maxTime = fs.Duration("max-time", 10*time.Minute, "soak: bound of the whole run (million: hold + 20m)")
		hold    = fs.Duration("hold", 5*time.Minute, "million: how long the sessions are held before the sample is published")
		sample  = fs.Int("sample", 1000, "million: devices published to after the hold")
		perSess = fs.Int("bytes-per-session", 0, "million: machine bytes per session for the free-memory check (default: the measured figure)")
		rpcBody = fs.Int("body", 256, "rpc: request and answer bytes")
	)
	fs.StringVar(&common.Target.Addr, "addr", "", "comet TCP address of a running server (with --api)")
	fs.StringVar(&common.Target.API, "api", "", "logic HTTP address of a running server (with --addr)")
	fs.IntVar(&common.Target.PID, "pid", 0, "pid of a running server, for RSS and CPU figures")
	fs.StringVar(&common.Target.Secret, "secret", "", "token secret of a running server (default: the generated one)")
	fs.StringVar(&common.Target.APIKey, "api-key", "", "API key of a running server (default: the generated one)")
	fs.IntVar(&common.Procs, "procs", 0, "least number of load-client processes")
	fs.IntVar(&common.PerClient, "per-proc", 0, "most devices per load-client process (default and max 19000)")
	fs.IntVar(&common.Target.Comets, "comets", 0, "conns/heartbeat: start logic + K comet processes instead of msync all")
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if *verbose {
		common.Log = stderr
	}
	var (
		res any
		err error
	)
	if common.Target.Comets != 0 && scenario != "conns" && scenario != "heartbeat" && scenario != "million" {
		return fmt.Errorf("bench: --comets is for conns, heartbeat and million only")
	}
	if common.Target.Comets < 0 {
		return fmt.Errorf("bench: --comets must not be negative")
	}
	switch scenario {
	case "conns":
		res, err = bench.RunConns(ctx, bench.ConnsConfig{Common: common, N: *n, Window: *window})
	case "heartbeat":
		res, err = bench.RunHeartbeat(ctx, bench.HeartbeatConfig{Common: common, N: *n, Interval: *iv, Window: *window})
	case "publish":
		var steps []float64
		if steps, err = parseRates(*rates); err != nil {
			return err
		}
		res, err = bench.RunPublish(ctx, bench.PublishConfig{Common: common, Rate: *rate, Duration: *dur, Devices: *devices,
			Batch: *batch, Workers: *workers, FindMax: *findMax, Rates: steps})
	case "fanout":
		res, err = bench.RunFanout(ctx, bench.FanoutConfig{Common: common, N: *n, Msgs: *msgs, Batch: *batch, Workers: *workers})
	case "reconnect":
		res, err = bench.RunReconnect(ctx, bench.ReconnectConfig{Common: common, N: *n, Backlog: *backlog, Batch: *batch, Workers: *workers})
	case "rpc": // --rate, --devices, --workers only when given: rpc's defaults differ
		rc := bench.RPCConfig{Common: common, Duration: *dur, Body: *rpcBody}
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "rate":
				rc.Rate = *rate
			case "devices":
				rc.Devices = *devices
			case "workers":
				rc.Workers = *workers
			}
		})
		res, err = bench.RunRPC(ctx, rc)
	case "million":
		mc := bench.MillionConfig{Common: common, N: *n, Hold: *hold, Sample: *sample, BytesPerSession: *perSess}
		fs.Visit(func(f *flag.Flag) { // their defaults are the other scenarios'
			switch f.Name {
			case "interval":
				mc.Heartbeat = *iv
			case "max-time":
				mc.MaxTime = *maxTime
			}
		})
		var r *bench.MillionResult
		if r, err = bench.RunMillion(ctx, mc); err == nil && r.Stopped != "" {
			_ = printTable(stdout, r)
			err = fmt.Errorf("bench: million: stopped: %s", r.Stopped)
			if *asJSON {
				_ = json.NewEncoder(stdout).Encode(r)
			}
			return err
		}
		res = r
	case "soak": // --devices only when given: the soak's default is 500
		sc := bench.SoakConfig{Oplogs: *oplogs, Kills: *kills, MaxTime: *maxTime, Log: common.Log}
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "devices" {
				sc.Devices = *devices
			}
		})
		var r *bench.SoakResult
		if r, err = bench.RunSoak(ctx, sc); err == nil && !r.OK() {
			err = fmt.Errorf("bench: soak: %d lost, %d duplicated, %d out of order, %d altered (problems above)",
				r.Lost, r.Duplicated, r.OutOfOrder, r.PayloadMismatch)
			_ = printTable(stdout, r)
		}
		res = r
	default:
		fmt.Fprint(stderr, benchUsage)
		return fmt.Errorf("bench: unknown scenario %q", scenario)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	return printTable(stdout, res)
}

// parseRates reads --rates ("1000,2000"); empty gives none.
func parseRates(s string) ([]float64, error) {
	if s == "" {
		return nil, nil
	}
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bench: --rates: %q is not a positive rate", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// printTable prints a result struct's JSON-named fields, one per line.
func printTable(w io.Writer, res any) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		for v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f, fv := t.Field(i), v.Field(i)
			if f.Anonymous {
				walk(fv)
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" || (fv.Kind() == reflect.Slice && fv.Len() == 0) {
				continue
			}
			switch fv.Kind() {
			case reflect.Float64:
				fmt.Fprintf(tw, "%s\t%.2f\n", name, fv.Float())
			case reflect.Slice:
				b, _ := json.Marshal(fv.Interface())
				fmt.Fprintf(tw, "%s\t%s\n", name, b)
			default:
				fmt.Fprintf(tw, "%s\t%v\n", name, fv.Interface())
			}
		}
	}
	walk(reflect.ValueOf(res))
	return tw.Flush()
}

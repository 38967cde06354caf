#!/usr/bin/env bash
# vs-centrifugo.sh: msync against Centrifugo, side by side, in one run.
#
# Runs each figure's scenario for both servers interleaved (msync, then
# Centrifugo, then the next figure ...), RUNS times, and prints one table:
# the median of each server's runs and the ratio msync / Centrifugo.
#
#   scripts/vs-centrifugo.sh --centrifugo PATH --centbench PATH --config PATH \
#       [--msync bin/msync] [--runs 3] [--out DIR] [--max-time 40m] [--tiny]
#
# --centrifugo  the Centrifugo server binary (v6.9.1, built outside this repo)
# --centbench   its load client (JSON protocol over WebSocket + server HTTP API)
# --config      the Centrifugo config it is run with (memory engine, HMAC JWT,
#               namespace "sync", API key); its port is replaced by a free one
# --msync       the msync binary (`make build` gives bin/msync)
# --tiny        tiny sizes, to test the script itself (figures mean nothing)
#
# Sizes can be overridden in the environment: MEM_N (19000), DEVICES (1000),
# RATES1 (single-call steps/s), RATES50 (batch-50 steps/s), STEP (5s per
# step), LAT_DUR (10s), FAN_N (10000), FAN_K (100), STORM_N (19000),
# STORM_BACKLOG (100).
#
# Every command is bounded (timeout), and the whole run is bounded by
# --max-time: a run that would pass it is not started. Raw outputs stay in
# --out (default: a temp dir, printed). Loopback only; Centrifugo listens on
# a free 127.0.0.1 port and is stopped after each scenario.
set -euo pipefail

RUNS=3 OUT="" MAXTIME=40m TINY=0
MSYNC=bin/msync CENT="" CB="" CCONF=""
while [ $# -gt 0 ]; do
	case "$1" in
	--centrifugo) CENT=$2; shift 2 ;;
	--centbench) CB=$2; shift 2 ;;
	--config) CCONF=$2; shift 2 ;;
	--msync) MSYNC=$2; shift 2 ;;
	--runs) RUNS=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--max-time) MAXTIME=$2; shift 2 ;;
	--tiny) TINY=1; shift ;;
	-h|--help) sed -n '2,27p' "$0"; exit 0 ;;
	*) echo "vs-centrifugo: unknown argument $1" >&2; exit 2 ;;
	esac
done
for f in "$CENT" "$CB" "$MSYNC"; do
	[ -n "$f" ] && [ -x "$f" ] || { echo "vs-centrifugo: --centrifugo, --centbench and --msync must be executables (got '$f')" >&2; exit 2; }
done
[ -n "$CCONF" ] && [ -r "$CCONF" ] || { echo "vs-centrifugo: --config must be a readable Centrifugo config" >&2; exit 2; }
case "$RUNS" in ''|*[!0-9]*|0) echo "vs-centrifugo: --runs must be a positive number" >&2; exit 2 ;; esac

if [ "$TINY" = 1 ]; then
	: "${MEM_N:=300}" "${DEVICES:=50}" "${RATES1:=200,400}" "${RATES50:=500,1000}" "${STEP:=1s}"
	: "${LAT_DUR:=1s}" "${FAN_N:=200}" "${FAN_K:=5}" "${STORM_N:=200}" "${STORM_BACKLOG:=5}"
fi
: "${MEM_N:=19000}" "${DEVICES:=1000}" "${STEP:=5s}" "${LAT_DUR:=10s}"
: "${RATES1:=2000,3000,4000,6000,8000,10000,12000,16000}"
: "${RATES50:=5000,10000,15000,20000,25000,30000,40000,50000,60000}"
: "${FAN_N:=10000}" "${FAN_K:=100}" "${STORM_N:=19000}" "${STORM_BACKLOG:=100}"

secs() { # 40m / 90s / 2h -> seconds
	case "$1" in *h) echo $((${1%h} * 3600)) ;; *m) echo $((${1%m} * 60)) ;; *s) echo "${1%s}" ;; *) echo "$1" ;; esac
}
DEADLINE=$(($(date +%s) + $(secs "$MAXTIME")))
[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/vs-centrifugo.XXXXXX)
mkdir -p "$OUT"
echo "vs-centrifugo: outputs in $OUT" >&2
ulimit -Sn "$(ulimit -Hn)" # both servers and load clients hold one descriptor per session

CPID=""
cleanup() {
	if [ -n "$CPID" ]; then kill "$CPID" 2>/dev/null || true; wait "$CPID" 2>/dev/null || true; CPID=""; fi
}
trap cleanup EXIT INT TERM

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# cent_start: a fresh Centrifugo on a free port; sets CPID and CB_ADDR.
cent_start() {
	local port cfg
	port=$(freeport)
	cfg="$OUT/centrifugo-$port.json"
	python3 - "$CCONF" "$cfg" "$port" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c.setdefault("http_server", {})["address"] = "127.0.0.1"
c["http_server"]["port"] = int(sys.argv[3])
json.dump(c, open(sys.argv[2], "w"), indent=1)
EOF
	"$CENT" -c "$cfg" >"$OUT/centrifugo-$port.log" 2>&1 &
	CPID=$!
	CB_ADDR=(-ws "ws://127.0.0.1:$port/connection/websocket" -api "http://127.0.0.1:$port/api" -metrics "http://127.0.0.1:$port/metrics" -pid "$CPID")
	for _ in $(seq 1 200); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
		kill -0 "$CPID" 2>/dev/null || { echo "vs-centrifugo: centrifugo exited, see $OUT/centrifugo-$port.log" >&2; exit 1; }
		sleep 0.1
	done
	echo "vs-centrifugo: centrifugo not listening on $port within 20s" >&2
	exit 1
}

# cent NAME ARGS...: one centbench run against a fresh server, output in OUT/NAME.txt.
cent() {
	local name=$1; shift
	cent_start
	echo "  centrifugo $name: centbench $*" >&2
	timeout 900 "$CB" "${CB_ADDR[@]}" "$@" >"$OUT/$name.txt" 2>&1 || echo "  (centbench $name exited $?)" >&2
	cleanup
}

# ms NAME ARGS...: one msync bench run (it starts and stops its own server), JSON in OUT/NAME.json.
ms() {
	local name=$1; shift
	echo "  msync $name: msync bench $*" >&2
	timeout 900 "$MSYNC" bench "$@" --json >"$OUT/$name.json" 2>"$OUT/$name.err" || echo "  (msync bench $name exited $?)" >&2
}

# centmax FILE: Centrifugo's max sustained single-call rate from a maxrate output.
centmax() { sed -n 's/^RESULT maxrate .*max_sustained=\([0-9]*\).*/\1/p' "$1" | head -1; }

{
	echo "date_utc=$(date -u +%FT%TZ)"
	echo "nproc=$(nproc) mem_kb=$(awk '/MemTotal/{print $2}' /proc/meminfo) cpu=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
	echo "go=$(go version 2>/dev/null || echo none) centrifugo=$("$CENT" version 2>/dev/null | head -1)"
	echo "sizes: MEM_N=$MEM_N DEVICES=$DEVICES RATES1=$RATES1 RATES50=$RATES50 STEP=$STEP LAT_DUR=$LAT_DUR FAN_N=$FAN_N FAN_K=$FAN_K STORM_N=$STORM_N STORM_BACKLOG=$STORM_BACKLOG runs=$RUNS"
} >"$OUT/machine.txt"

for i in $(seq 1 "$RUNS"); do
	if [ "$(date +%s)" -ge "$DEADLINE" ]; then
		echo "vs-centrifugo: --max-time reached before run $i; reporting the runs done" >&2
		break
	fi
	echo "run $i ($(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
	echo "run$i start=$(date -u +%T) load=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
	ms "r$i-mem" conns -n "$MEM_N" --comets 1 --window 2s
	cent "r$i-mem" -mode mem -n "$MEM_N"
	ms "r$i-max1" publish --devices "$DEVICES" --batch 1 --workers 32 --duration "$STEP" --rates "$RATES1"
	cent "r$i-max1" -mode maxrate -n "$DEVICES" -batch 1 -workers 32 -dur "$STEP" -rates "$RATES1"
	half=$(( $(centmax "$OUT/r$i-max1.txt" || echo 0) / 2 ))
	if [ "$half" -gt 0 ]; then
		echo "$half" >"$OUT/r$i-half.rate"
		ms "r$i-lat" publish --devices "$DEVICES" --batch 1 --workers 32 --duration "$LAT_DUR" --rate "$half"
		cent "r$i-lat" -mode lat -n "$DEVICES" -batch 1 -workers 32 -dur "$LAT_DUR" -rate "$half"
	fi
	ms "r$i-max50" publish --devices "$DEVICES" --batch 50 --workers 32 --duration "$STEP" --rates "$RATES50"
	cent "r$i-max50" -mode maxrate -n "$DEVICES" -batch 50 -workers 32 -dur "$STEP" -rates "$RATES50"
	ms "r$i-fan" fanout -n "$FAN_N" --msgs "$FAN_K"
	cent "r$i-fan" -mode bcast -n "$FAN_N" -k "$FAN_K"
	ms "r$i-storm" reconnect -n "$STORM_N" --backlog "$STORM_BACKLOG"
	cent "r$i-storm" -mode recover -missed "$STORM_BACKLOG"
	echo "run$i end=$(date -u +%T) load=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
done

python3 - "$OUT" "$(secs "$STEP")" <<'EOF'
import glob, json, os, re, statistics, sys

out = sys.argv[1]
step_secs = float(sys.argv[2])  # one rate step: lost publishes per second of it
runs = sorted({int(m.group(1)) for f in os.listdir(out) for m in [re.match(r"r(\d+)-", f)] if m})

def msj(i, name):
    try:
        with open(f"{out}/r{i}-{name}.json") as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except Exception:
        return None

def cb(i, name, kind):
    """Every RESULT line of kind in a centbench output, as dicts."""
    rows = []
    try:
        for line in open(f"{out}/r{i}-{name}.txt"):
            if line.startswith("RESULT " + kind + " "):
                rows.append(dict(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv))
    except OSError:
        pass
    return rows

def f(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

checks = []  # (run, figure, server, lost, dups) for "nothing lost, nothing duplicated"

def ms_steps(j):
    return (j or {}).get("steps") or []

def cpu_us(step_cpu_pct, achieved):
    if step_cpu_pct is None or not achieved:
        return None
    return step_cpu_pct / 100.0 / achieved * 1e6

fig = {}  # name -> {"msync": [..per run], "centrifugo": [...]}
def put(name, server, v):
    fig.setdefault(name, {"msync": [], "centrifugo": []})[server].append(v)

for i in runs:
    j = msj(i, "mem")
    v = None
    if j:
        procs = j.get("server_procs") or []
        v = procs[1]["bytes_per_conn"] if len(procs) > 1 and procs[1].get("bytes_per_conn") else j.get("bytes_per_conn")
        checks.append((i, "mem", "msync", 0, 0, j.get("drops", 0)))
    put("idle memory per session, bytes (RSS delta; lower is better)", "msync", v)
    c = cb(i, "mem", "mem")
    put("idle memory per session, bytes (RSS delta; lower is better)", "centrifugo", f(c[0]["server_kb_per_conn"]) * 1024 if c else None)

    j = msj(i, "max1")
    put("unicast 1/call: max sustained, /s", "msync", f((j or {}).get("max_sustainable_rate")) or (0.0 if j else None))
    for s in ms_steps(j):
        checks.append((i, "max1@%d" % s["rate"], "msync", s["lost"], s["dups"], s["drops"]))
    c = cb(i, "max1", "maxrate")
    put("unicast 1/call: max sustained, /s", "centrifugo", f(c[0]["max_sustained"]) if c else None)
    for s in cb(i, "max1", "maxrate-step"):
        checks.append((i, "max1@" + s["rate"], "centrifugo", int(s["lost"]), 0, 0))

    j, c = msj(i, "lat"), cb(i, "lat", "lat")
    put("unicast 1/call: p99 ms at half Centrifugo's max (lower is better)", "msync", f((j or {}).get("p99_ms")))
    put("unicast 1/call: p99 ms at half Centrifugo's max (lower is better)", "centrifugo", f(c[0]["p99_ms"]) if c else None)
    if j:
        checks.append((i, "lat", "msync", j["lost"], j["dups"], j["drops"]))
    if c:
        checks.append((i, "lat", "centrifugo", int(c[0]["lost"]), 0, int(c[0].get("disconnects", 0))))

    j = msj(i, "max50")
    msteps, csteps = ms_steps(j), cb(i, "max50", "maxrate-step")
    put("unicast batch 50: max sustained, /s", "msync", f((j or {}).get("max_sustainable_rate")) or (0.0 if j else None))
    c = cb(i, "max50", "maxrate")
    put("unicast batch 50: max sustained, /s", "centrifugo", f(c[0]["max_sustained"]) if c else None)
    put("unicast batch 50: delivered/s at saturation", "msync", max((s["delivered_per_s"] for s in msteps), default=None))
    put("unicast batch 50: delivered/s at saturation", "centrifugo",
        max((f(s["achieved"]) - int(s["lost"]) / step_secs for s in csteps if f(s["achieved"])), default=None))
    # CPU per delivered oplog: at the highest rate both sustained in this run (same offered load)
    both = sorted(set(s["rate"] for s in msteps if s["sustained"]) & set(f(s["rate"]) for s in csteps if s["sustained"] == "true"))
    if both:
        r = both[-1]
        ms_ = [s for s in msteps if s["rate"] == r][0]
        cs_ = [s for s in csteps if f(s["rate"]) == r][0]
        put("server CPU us per delivered oplog, batch 50, at the highest rate both sustained (lower is better)", "msync", ms_.get("server_cpu_us_per_delivery"))
        put("server CPU us per delivered oplog, batch 50, at the highest rate both sustained (lower is better)", "centrifugo", cpu_us(f(cs_["server_cpu"]), f(cs_["achieved"])))
    for s in msteps:
        checks.append((i, "max50@%d" % s["rate"], "msync", s["lost"], s["dups"], s["drops"]))
    for s in csteps:
        checks.append((i, "max50@" + s["rate"], "centrifugo", int(s["lost"]), 0, 0))

    j, c = msj(i, "fan"), cb(i, "fan", "bcast")
    put("fan-out: deliveries/s", "msync", f((j or {}).get("deliveries_per_s")))
    put("fan-out: deliveries/s", "centrifugo", f(c[0]["deliveries_per_s"]) if c else None)
    if j:
        checks.append((i, "fanout", "msync", j["lost"], j["dups"], j["drops"]))
    if c:
        checks.append((i, "fanout", "centrifugo", int(c[0]["expected"]) - int(c[0]["delivered"]), 0, int(c[0]["disconnects"])))

    j = msj(i, "storm")
    put("reconnect storm: seconds to synced (lower is better)", "msync", f((j or {}).get("seconds_to_synced")))
    put("reconnect storm: seconds to synced (lower is better)", "centrifugo", None)
    if j:
        checks.append((i, "storm", "msync", j["lost"], j["dups"], j["drops"]))
    rec = [r for r in cb(i, "storm", "recover") if r.get("bad_epoch") == "false"]
    put("(Centrifugo) one client recovering the backlog, ms", "centrifugo", f(rec[0]["reconnect+recover_ms"]) if rec else None)
    put("(Centrifugo) one client recovering the backlog, ms", "msync", None)
    if rec:
        checks.append((i, "recover", "centrifugo", 0 if rec[0]["offsets_consecutive"] == "true" and rec[0]["seq_in_order"] == "true" else 1, 0, 0))

def med(vs):
    vs = [v for v in vs if v is not None]
    return statistics.median(vs) if vs else None

def fmt(v):
    if v is None:
        return "—"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"

print(f"| figure | msync (median of {len(runs)}) | Centrifugo (median of {len(runs)}) | ratio msync/Centrifugo | msync runs | Centrifugo runs |")
print("|---|---:|---:|---:|---|---|")
for name, d in fig.items():
    m, c = med(d["msync"]), med(d["centrifugo"])
    ratio = f"{m / c:.2f}x" if m is not None and c else "—"
    runs_ = lambda vs: " / ".join(fmt(v) for v in vs)
    print(f"| {name} | {fmt(m)} | {fmt(c)} | {ratio} | {runs_(d['msync'])} | {runs_(d['centrifugo'])} |")
bad = [c for c in checks if c[3] or c[4] or c[5]]
print()
print(f"lost / duplicated / dropped sessions: {len(checks)} scenario steps checked, {len(bad)} with any")
for c in bad:
    print(f"  run {c[0]} {c[1]} {c[2]}: lost {c[3]} dups {c[4]} drops {c[5]}")
halves = [open(p).read().strip() for p in sorted(glob.glob(f"{out}/r*-half.rate"))]
if halves:
    print("half of Centrifugo's max single-call rate, per run:", " / ".join(halves))
print()
print(open(f"{out}/machine.txt").read().rstrip())
EOF

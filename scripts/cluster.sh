#!/usr/bin/env bash
# Starts the mixed local cluster in the foreground: one logic+job process on
# the embedded Pebble store and N comet processes, all talking gRPC on this
# machine. Ctrl-C (or SIGTERM) stops every process this script started, by
# pid, and waits for them.
#
#   scripts/cluster.sh [COMETS]        (default 2; `make cluster` runs it)
#
# Ports (BASE=3101 by default): logic HTTP :BASE+10 (3111), logic gRPC
# 127.0.0.1:BASE+11 (3112); comet i (1-based): devices :BASE+2(i-1) (3101,
# 3103, ...), gRPC 127.0.0.1:BASE+1+2(i-1) (3102, 3104, ...), /healthz and
# /metrics 127.0.0.1:BASE+99+i (3201, 3202, ...). Override with BASE, BIN,
# DATA, LOGIC_CONFIG, COMET_CONFIG.
#
# The tiers talk mutual TLS (rpc_tls in the configs): the development CA and
# certificates live in ./certs-dev, written by `msync certs` when missing.
set -euo pipefail

COMETS="${1:-2}"
BASE="${BASE:-3101}"
BIN="${BIN:-bin/msync}"
DATA="${DATA:-./data-cluster}"
LOGIC_CONFIG="${LOGIC_CONFIG:-configs/cluster-logic.yaml}"
COMET_CONFIG="${COMET_CONFIG:-configs/cluster-comet.yaml}"

if ! [[ "$COMETS" =~ ^[1-4]$ && "$BASE" =~ ^[1-9][0-9]{3,4}$ ]]; then
  echo "usage: [BASE=port] $0 [COMETS 1-4] (comets use BASE..BASE+7, logic BASE+10/+11)" >&2
  exit 2
fi
[[ -x "$BIN" ]] || { echo "$BIN not found: run 'make build' first" >&2; exit 1; }
if [[ ! -f ./certs-dev/ca.crt ]]; then
  "$BIN" certs --dir ./certs-dev --comets comet-1,comet-2,comet-3,comet-4 >/dev/null
  echo "cluster: wrote development tier certificates to ./certs-dev" >&2
fi

pids=()
stop() {
  trap - INT TERM EXIT
  echo "cluster: stopping ${pids[*]:-nothing}" >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap 'stop; exit 130' INT TERM
trap stop EXIT

LOGIC_GRPC="127.0.0.1:$(( BASE + 11 ))"
"$BIN" logic -c "$LOGIC_CONFIG" --data "$DATA" --http ":$(( BASE + 10 ))" --grpc "$LOGIC_GRPC" &
pids+=($!)

# Comets retry logic on their own (Renew every renew_interval, Connect per
# device), so they may start before logic listens; the first registration
# is sent at comet start, so give logic a moment to bind.
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$(( BASE + 11 ))") 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "cluster: logic exited" >&2; exit 1; }
  sleep 0.1
done

for i in $(seq "$COMETS"); do
  off=$(( 2 * (i - 1) ))
  "$BIN" comet -c "$COMET_CONFIG" --id "comet-$i" --logic "$LOGIC_GRPC" \
    --addr ":$(( BASE + off ))" --grpc "127.0.0.1:$(( BASE + 1 + off ))" --http "127.0.0.1:$(( BASE + 99 + i ))" &
  pids+=($!)
done

echo "cluster: logic+job pid ${pids[0]} (HTTP :$(( BASE + 10 ))), $COMETS comet(s) on :$BASE, :$(( BASE + 2 )) ... — Ctrl-C stops all" >&2
# Exit (and stop the rest) as soon as any process dies.
wait -n "${pids[@]}" || true
echo "cluster: a process exited" >&2

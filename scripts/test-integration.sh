#!/usr/bin/env bash
# `make test-integration`: the suites that need real servers (build tag
# `integration`), against a real Cassandra and a real RocketMQ.
#
# MSYNC_CASSANDRA_HOSTS / MSYNC_ROCKETMQ_NAMESRV name running servers; for
# each one unset, scripts/engines.sh starts the engine (same variables for
# dir and ports) and this script stops it again on exit, also on failure or
# Ctrl-C. Engines that were already running before are left running. The
# two variables are set for the `go test` step only, so a `make test` never
# sees them.
#
#   INTEGRATION_PKGS   packages to test (default: the store and queue backends)
#   INTEGRATION_TIMEOUT  go test -timeout (default 12m)
#   INTEGRATION_RUN    go test -run of that step (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINES=scripts/engines.sh
PKGS="${INTEGRATION_PKGS:-./pkg/store/cassandra/... ./pkg/directory/cassandra/... ./pkg/queue/rocketmq/...}"
TIMEOUT="${INTEGRATION_TIMEOUT:-12m}"
hosts="${MSYNC_CASSANDRA_HOSTS:-}"
namesrv="${MSYNC_ROCKETMQ_NAMESRV:-}"

want=()
[[ -n "$hosts" ]] || want+=(cassandra)
[[ -n "$namesrv" ]] || want+=(rocketmq)

started=()
stop() {
  local rc=$?
  trap - EXIT INT TERM
  if (( ${#started[@]} > 0 )); then
    if (( rc != 0 )); then
      echo "test-integration: failed (exit $rc); engine logs: $("$ENGINES" status 2>&1 | sed -n 's/^engines: logs: //p')" >&2
    fi
    "$ENGINES" down "${started[@]}" || true
  fi
  exit "$rc"
}
trap stop EXIT
trap 'exit 130' INT TERM

if (( ${#want[@]} > 0 )); then
  # What was serving before stays up afterwards (e.g. after `make engines-up`).
  before="$("$ENGINES" status 2>&1 || true)"
  for e in "${want[@]}"; do
    case "$e" in
      cassandra) grep -q "cassandra: serving" <<<"$before" || started+=(cassandra) ;;
      rocketmq) grep -q "broker: registered" <<<"$before" || started+=(rocketmq) ;;
    esac
  done
  start=$SECONDS
  envs="$(MSYNC_ENGINES_FRESH=1 "$ENGINES" up "${want[@]}")"
  echo "test-integration: engines up in $(( SECONDS - start ))s" >&2
  [[ -n "$hosts" ]] || hosts="$(sed -n 's/^MSYNC_CASSANDRA_HOSTS=//p' <<<"$envs")"
  [[ -n "$namesrv" ]] || namesrv="$(sed -n 's/^MSYNC_ROCKETMQ_NAMESRV=//p' <<<"$envs")"
fi

echo "test-integration: MSYNC_CASSANDRA_HOSTS=$hosts MSYNC_ROCKETMQ_NAMESRV=$namesrv" >&2
start=$SECONDS
# shellcheck disable=SC2086 # PKGS is a list
MSYNC_CASSANDRA_HOSTS="$hosts" MSYNC_ROCKETMQ_NAMESRV="$namesrv" MSYNC_ENGINES_CTL="$PWD/$ENGINES" \
  go test -count=1 -tags integration -timeout "$TIMEOUT" ${INTEGRATION_RUN:+-v -run "$INTEGRATION_RUN"} $PKGS
# The production path end to end (e2e/*_real_test.go: the cluster scenarios and a short chaos run
# that stops and starts the engines through $ENGINES); INTEGRATION_PKGS set = only those packages.
[[ -n "${INTEGRATION_PKGS:-}" ]] || MSYNC_CASSANDRA_HOSTS="$hosts" MSYNC_ROCKETMQ_NAMESRV="$namesrv" MSYNC_ENGINES_CTL="$PWD/$ENGINES" \
  go test -count=1 -tags integration -timeout "$TIMEOUT" -v -run 'Real$' ./e2e/
echo "test-integration: tests passed in $(( SECONDS - start ))s" >&2

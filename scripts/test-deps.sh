#!/usr/bin/env bash
# Makes sure the tools `make test` needs besides Go are on this machine (the
# first step of `make test`): Chromium (web/browser_test.go drives the demo
# page in it headless), Node.js >= 20 (web/jsunit_test.go runs `node --test`
# on sdk/js), and a JDK with Maven (sdk/kotlin's `mvn verify`). None of them is
# needed to build or run msync.
#
# Missing tools are installed from the Debian packages when running as root
# with apt-get (after apt-get update); otherwise the script prints one line
# saying exactly what to install and exits 1.
#
#   MSYNC_CHROMIUM=/path   use this browser instead of looking for one
#   MSYNC_SKIP_BROWSER=1   do not need Chromium (the browser test is skipped)
set -euo pipefail

# The same names web/browser_test.go tries, in its order.
have_chromium() {
	[ "${MSYNC_SKIP_BROWSER:-}" = 1 ] && return 0
	if [ -n "${MSYNC_CHROMIUM:-}" ]; then
		[ -x "$MSYNC_CHROMIUM" ] || command -v "$MSYNC_CHROMIUM" >/dev/null
		return
	fi
	[ -x /usr/bin/chromium ] && return 0
	local c
	for c in chromium chromium-browser google-chrome google-chrome-stable; do
		command -v "$c" >/dev/null && return 0
	done
	return 1
}

have_node() { command -v node >/dev/null; }

# sdk/js/package.json: "engines": {"node": ">=20"}.
node_new_enough() {
	[ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -ge 20 ]
}

missing=()
have_chromium || missing+=(chromium)
have_node || missing+=(nodejs)
command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || missing+=(maven)

if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
		echo "make test needs ${missing[*]}: run 'sudo apt-get install -y --no-install-recommends ${missing[*]}' (or set MSYNC_CHROMIUM=/path/to/chromium, or MSYNC_SKIP_BROWSER=1 to skip the browser test)" >&2
		exit 1
	fi
	echo "test-deps: installing ${missing[*]} from the Debian packages"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
	have_chromium || { echo "test-deps: chromium is still missing after apt-get install" >&2; exit 1; }
	have_node || { echo "test-deps: node is still missing after apt-get install" >&2; exit 1; }
	command -v mvn >/dev/null || { echo "test-deps: mvn is still missing after apt-get install" >&2; exit 1; }
fi

if ! node_new_enough; then
	echo "make test needs Node.js >= 20 for sdk/js, found $(node --version) at $(command -v node): install Node.js 20 or later (Debian 13's nodejs package, or https://nodejs.org) ahead of it in PATH" >&2
	exit 1
fi

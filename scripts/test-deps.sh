#!/usr/bin/env bash
# Makes sure the tools `make test` needs besides Go are on this machine (the
# first step of `make test`): Chromium (web/browser_test.go drives the demo
# page in it headless) and Node.js (web/jsunit_test.go runs `node --test` on
# sdk/js). Neither is needed to build or run msync.
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

missing=()
if [ "${MSYNC_SKIP_BROWSER:-}" != 1 ] && ! have_chromium; then
	missing+=(chromium)
fi
command -v node >/dev/null || missing+=(nodejs)

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "test-deps: installing ${missing[*]} (Debian packages)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
	if [ "${MSYNC_SKIP_BROWSER:-}" != 1 ] && ! have_chromium; then
		echo "test-deps: chromium is still missing after apt-get install" >&2
		exit 1
	fi
	command -v node >/dev/null || { echo "test-deps: node is still missing after apt-get install" >&2; exit 1; }
	exit 0
fi

echo "make test needs ${missing[*]}: run 'sudo apt-get install -y --no-install-recommends ${missing[*]}' (or set MSYNC_CHROMIUM=/path/to/chromium, or MSYNC_SKIP_BROWSER=1 to skip the browser test)" >&2
exit 1

#!/usr/bin/env bash
# Debian's Chromium for the dashboard's browser tests (test/ui), which drive it
# with playwright-core: nothing downloads a browser build. Idempotent; needs
# root when the package is missing. Prints the browser's path.
set -euo pipefail

BIN=/usr/bin/chromium
die() { echo "install-chromium: $*" >&2; exit 1; }

if [[ ! -x $BIN ]]; then
  [[ $(id -u) -eq 0 ]] || die "chromium is missing and this is not root: sudo apt-get install -y chromium"
  log=$(mktemp /tmp/qmaint-chromium-apt.XXXXXX)
  echo "install-chromium: installing chromium (log: $log)" >&2
  rc=0
  apt-cache show chromium >/dev/null 2>&1 || apt-get update >>"$log" 2>&1 || rc=$?
  if ((rc == 0)); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >>"$log" 2>&1 || {
      # stale package lists (404s): refresh once and retry
      apt-get update >>"$log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >>"$log" 2>&1
    } || rc=$?
  fi
  if ((rc != 0)); then
    cat "$log" >&2
    die "apt-get failed (exit $rc)"
  fi
  [[ -x $BIN ]] || die "chromium installed but $BIN is missing"
fi
echo "$BIN"

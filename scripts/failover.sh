#!/usr/bin/env bash
# `npm run failover`: test/failover/ on a fresh scripts/pg15-ha.sh rig, first
# with a synchronous standby (0 acknowledged enqueues may be lost), then with
# an asynchronous one (the loss is measured and printed). Each pass spends its
# rig (the primary is killed), so each gets a new one. Debian/Ubuntu, root.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build >/dev/null
dir=$(mktemp -u /tmp/qmaint-failover.XXXXXX)
cleanup() { scripts/pg15-ha.sh stop "$dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT
for mode in --sync --async; do
  echo "== failover with ${mode#--} replication"
  if [[ $mode == --sync ]]; then env=$(scripts/pg15-ha.sh start --sync "$dir"); else env=$(scripts/pg15-ha.sh start "$dir"); fi
  (eval "$env" && npx vitest run test/failover/)
  scripts/pg15-ha.sh stop "$dir"
done

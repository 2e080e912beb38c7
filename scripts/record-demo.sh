#!/usr/bin/env bash
# Record `npx qmaint demo` as it looks in an 80x24 terminal and keep it as text:
# the demo runs under tmux (a private server, 80 columns, 24 rows), and the whole
# scrollback is captured with `tmux capture-pane -p -S -` into docs/demo.txt.
#
#   scripts/record-demo.sh [OUTPUT]      (default: docs/demo.txt)
#
# Uses the database qmaint would use (the embedded PostgreSQL when nothing is
# configured); run `npm run build` first. Needs tmux (apt-get install tmux).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/docs/demo.txt}
command -v tmux >/dev/null || { echo "record-demo: tmux is not installed (apt-get install tmux)" >&2; exit 2; }
[ -f "$root/dist/cli.js" ] || { echo "record-demo: run npm run build first" >&2; exit 2; }

socket=qmaint-record-$$
work=$(mktemp -d)
trap 'tmux -L "$socket" kill-server 2>/dev/null || true; rm -rf "$work"' EXIT

# A private tmux server: nothing from the user's tmux.conf, the whole demo kept in
# the scrollback, and the pane kept after the demo exits so it can be captured.
cat > "$work/tmux.conf" <<'CONF'
set -g history-limit 100000
set -g remain-on-exit on
set -g status off
CONF
# What runs in the terminal: the command as a user would type it, then the demo.
cat > "$work/run.sh" <<'RUN'
printf '$ npx qmaint demo\n'
npx --no-install qmaint demo
echo "$?" > "$QMAINT_RECORD_STATUS"
RUN

tmux -L "$socket" -f "$work/tmux.conf" new-session -d -s demo -x 80 -y 24 -c "$root" \
  -e "QMAINT_RECORD_STATUS=$work/status" "bash --noprofile --norc $work/run.sh"

# Wait for the demo to end (at most 10 minutes).
for _ in $(seq 1 1200); do
  [ "$(tmux -L "$socket" display-message -p -t demo '#{pane_dead}')" = 1 ] && break
  sleep 0.5
done
status=$(cat "$work/status" 2>/dev/null || echo "none")
if [ "$status" != 0 ]; then
  tmux -L "$socket" capture-pane -p -S - -t demo | tail -20 >&2
  echo "record-demo: the demo exited with status $status; $out left as it was" >&2
  exit 1
fi
# The scrollback and the screen, trailing blank lines and tmux's "Pane is dead" line dropped.
tmux -L "$socket" capture-pane -p -S - -t demo | sed -e '/^Pane is dead/d' | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' > "$out"
echo "record-demo: wrote $out ($(wc -l < "$out") lines, at most $(awk '{ if (length > m) m = length } END { print m }' "$out") columns)"

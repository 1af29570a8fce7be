#!/bin/sh
# `make demo`: the whole fluxmail loop on this machine, no account anywhere.
#   1. start `fluxmail dev-server` in the background on a free port
#   2. send a message with an attachment through `fluxmail send`, configured ONLY by
#      environment variables (exactly what a service's FluxMail.from_env() would read)
#   3. show what the server received and the audit record (`fluxmail audit list`)
#   4. stop the server
# Usage: sh scripts/demo.sh [path/to/fluxmail]   (default: .venv/bin/fluxmail of this checkout)
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-"$ROOT/.venv/bin/fluxmail"}
case $BIN in /*) ;; *) BIN="$(pwd)/$BIN" ;; esac
[ -x "$BIN" ] || { echo "demo: $BIN not found; run 'make install' first" >&2; exit 1; }

# A clean slate: no FLUXMAIL_* from the caller's shell, no .env (we run in a fresh folder).
for var in $(env | sed -n 's/^\(FLUXMAIL_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$var"; done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fluxmail-demo.XXXXXX")
cd "$WORK"
SERVER_PID=""
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" && wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT INT TERM

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then BOLD=$(printf '\033[1m'); PLAIN=$(printf '\033[0m'); else
    BOLD=""; PLAIN=""; fi
step() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$PLAIN"; }

step "1. fluxmail dev-server --port 0   (in the background)"
: >"$WORK/server.log"  # exists before the loop below reads it (the server may start late)
"$BIN" dev-server --port 0 --folder "$WORK/mail" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
PORT=""
tries=0
while [ -z "$PORT" ]; do
    PORT=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$WORK/server.log")
    tries=$((tries + 1))
    if [ -z "$PORT" ] && { [ "$tries" -gt 150 ] || ! kill -0 "$SERVER_PID" 2>/dev/null; }; then
        cat "$WORK/server.log" >&2
        echo "demo: the dev server did not start" >&2
        exit 1
    fi
    [ -n "$PORT" ] || sleep 0.1
done
cat "$WORK/server.log"

printf 'Hello from fluxmail.\nThis file travelled as an attachment.\n' >"$WORK/hello.txt"
export FLUXMAIL_HOST=127.0.0.1
export FLUXMAIL_PORT="$PORT"
export FLUXMAIL_TLS=false
export FLUXMAIL_SENDER="fluxmail demo <demo@example.com>"
export FLUXMAIL_AUDIT_DIR="$WORK/audit"

step "2. fluxmail send   (configured only by these environment variables)"
env | grep '^FLUXMAIL_' | sort | sed 's/^/    /'
"$BIN" send --to you@example.com --subject "Hello from fluxmail" \
    --text "It works: this message went through the local dev server." \
    --attach "$WORK/hello.txt"

step "3a. what the dev server received"
tries=0
until grep -q "saved:" "$WORK/server.log" || [ "$tries" -gt 50 ]; do
    sleep 0.1
    tries=$((tries + 1))
done
sed -n '/message received/,$p' "$WORK/server.log"
ls "$WORK/mail"/*.eml >/dev/null

step "3b. fluxmail audit list"
"$BIN" audit list

step "4. stopping the dev server"
stop_server
tail -n 1 "$WORK/server.log"
printf '\nEverything is kept in %s (mail/*.eml, audit/).\n' "$WORK"
printf 'Next: fluxmail providers, then FLUXMAIL_PROVIDER=... fluxmail check\n'

#!/usr/bin/env bash
# Runs every client battery against the Node reference server (reference-server.mjs), to prove the batteries
# themselves are sound independently of the Rust server. Prints one line per battery and, for a failing one,
# its whole output. Exit code 0 only if every battery passed.
#
# Needs: node with `npm ci` done here and in web/, the Python venv (NONSTICK_PYTHON, default <repo>/.venv/bin/python)
# and Chromium (NONSTICK_CHROMIUM, default /usr/bin/chromium). scripts/test installs all of them.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
node=${NONSTICK_NODE:-node}
python=${NONSTICK_PYTHON:-$root/.venv/bin/python}

# The server's stdin is the coprocess pipe: if this script dies, the pipe closes and the server exits.
coproc SERVER { exec "$node" "$here/reference-server.mjs" --port 0 --node-id reference; }
server_pid=$SERVER_PID
trap 'kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true' EXIT

line=""
if ! read -r -t 15 line <&"${SERVER[0]}" || [[ $line != LISTENING\ * ]]; then
  echo "reference server did not start (got: ${line:-nothing})" >&2
  exit 1
fi
url="http://127.0.0.1:${line#LISTENING }"

failures=0
out=$(mktemp)
trap 'rm -f "$out"; kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true' EXIT

battery() {
  local label=$1
  shift
  local started=$SECONDS
  if "$@" >"$out" 2>&1; then
    echo "reference $label ok ($(grep -c '^ok - ' "$out") checks, $((SECONDS - started)) s)"
  else
    failures=$((failures + 1))
    echo "reference $label FAILED:"
    sed 's/^/    /' "$out"
  fi
}

for t in polling websocket default; do
  battery "sio-client/$t" "$node" "$here/sio-client.mjs" --url "$url" --transports "$t"
done
for t in polling websocket; do
  battery "python/$t" "$python" "$here/python/sio_client.py" --url "$url" --transport "$t"
done
battery "chat-page/default" "$node" "$here/chat-page.mjs" --url "$url"
battery "chat-page/polling" "$node" "$here/chat-page.mjs" --url "$url" --transports polling

if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "reference server died during the run" >&2
  failures=$((failures + 1))
fi
# One coprocess at a time: the first server stops before the second starts.
kill "$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true

# The same battery with socket.io-msgpack-parser on both sides, against a second reference server.
coproc MSGPACK { exec "$node" "$here/reference-server.mjs" --port 0 --node-id reference --parser msgpack; }
msgpack_pid=$MSGPACK_PID
trap 'rm -f "$out"; kill "$server_pid" "$msgpack_pid" 2>/dev/null || true; wait "$server_pid" "$msgpack_pid" 2>/dev/null || true' EXIT
if ! read -r -t 15 line <&"${MSGPACK[0]}" || [[ $line != LISTENING\ * ]]; then
  echo "msgpack reference server did not start (got: ${line:-nothing})" >&2
  exit 1
fi
msgpack_url="http://127.0.0.1:${line#LISTENING }"
battery "sio-client/default/msgpack" "$node" "$here/sio-client.mjs" --url "$msgpack_url" --transports default --parser msgpack
if ! kill -0 "$msgpack_pid" 2>/dev/null; then
  echo "msgpack reference server died during the run" >&2
  failures=$((failures + 1))
fi
exit $((failures > 0))

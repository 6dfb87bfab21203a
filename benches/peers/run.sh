#!/usr/bin/env bash
# Peers side by side, in one run: the same message count against the same emulator process,
# one client after the other. Prints `name: value unit` lines (and `#` context lines).
#
#   benches/peers/run.sh [COUNT]        # default 100000
#
# - ours: the worker Client (one connection, window 100) through `bench --peer-client`, and
#   the `fcm_send` program (its JSON line per outcome is read through `tail -1` for the summary);
# - node-xcs 0.1.8 from the npm registry, installed into target/peers (git-ignored);
# - xmppgcm 0.2.4 from PyPI, into a venv in target/peers: it cannot send; the reason is printed.
# The emulator is `bench --serve-emulator`, a release build, on a free loopback port; it
# stops when this script closes its stdin. Needs node and npm.
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${1:-100000}
WORK=target/peers
SENDER=123456789012
KEY=bench-server-key
CA=$PWD/src/emulator/testdata/cert.pem
# The registration token examples/bench sends to (152 characters).
export BENCH_TOKEN="dQw4w9WgXcQ:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx1mUe3KbZ7vVnJq0HwXyTcLsP9aRfOe4uIgD8kNmB6jWtQpZr2xYs5vC1oL7hGdA3fEiMbU0nKwRqTz9ySaXcVjPlHgF4eDuI-Ox_Nk"

cargo build -q --release --features emulator --example bench --example fcm_send
B=target/release/examples
mkdir -p "$WORK"
if [ ! -d "$WORK/node_modules/node-xcs" ]; then
    (cd "$WORK" && { [ -f package.json ] || npm init -y >/dev/null; } &&
        npm install --no-audit --no-fund --loglevel=error node-xcs@0.1.8 >/dev/null)
fi

coproc EMU { exec "$B/bench" --serve-emulator; }
EMU_IN=${EMU[1]}
trap 'eval "exec ${EMU_IN}>&-"; wait' EXIT
read -r -t 10 line <&"${EMU[0]}"
PORT=${line#port }
echo "# peers: $COUNT messages each, ~100-byte data, emulator on 127.0.0.1:$PORT"
echo "# loadavg: $(cat /proc/loadavg)"

ours=$("$B/bench" --peer-client "$PORT" "$COUNT")
echo "$ours"

# fcm_send's summary rate counts from Client::start (connect included); its peak RSS comes
# from GNU time when that is installed.
TIME=(); [ -x /usr/bin/time ] && TIME=(/usr/bin/time -f "fcm_send_peak_rss_kib: %M KiB" -o "$WORK/fcm_send.rss")
summary=$("${TIME[@]}" env FCM_SERVER_KEY=$KEY "$B/fcm_send" --endpoint "127.0.0.1:$PORT" \
    --ca-file "$CA" --sender-id $SENDER --to "$BENCH_TOKEN" --count "$COUNT" --ttl 600 \
    --data "text=Your order #8812 has shipped and arrives Tuesday 9-12; track it in our app" | tail -1)
echo "fcm_send_msgs_per_s: $(echo "$summary" | sed -n 's/.*"rate":\([0-9.]*\).*/\1/p') msg/s"
[ -f "$WORK/fcm_send.rss" ] && cat "$WORK/fcm_send.rss"

node_out=$(NODE_PATH=$WORK/node_modules NODE_EXTRA_CA_CERTS=$CA \
    node benches/peers/node_xcs.js "$PORT" "$COUNT" $SENDER $KEY)
echo "$node_out"

# xmppgcm: try the install, and say why it cannot run.
xmppgcm_why="it hands bytes to a function that calls .encode on them, so its send thread dies on the first message (every Python 3)"
if [ ! -d "$WORK/py" ]; then python3 -m venv "$WORK/py" >/dev/null 2>&1 || true; fi
if [ -x "$WORK/py/bin/pip" ]; then
    if err=$("$WORK/py/bin/pip" install -q xmppgcm==0.2.4 2>&1); then
        echo "# xmppgcm 0.2.4 installed on $("$WORK/py/bin/python" --version), but $xmppgcm_why"
    else
        echo "# xmppgcm 0.2.4 does not install on $("$WORK/py/bin/python" --version):" \
            "$(echo "$err" | grep -m1 -o "AttributeError.*" || echo "pip failed")"
        echo "# (sleekxmpp 1.3.3 predates Python 3.10); patched to install, $xmppgcm_why"
    fi
fi
echo "xmppgcm_runnable: 0 bool"

val() { echo "$1" | awk -v k="$2:" '$1 == k { print $2 }'; }
ours_rate=$(val "$ours" peer_client_msgs_per_s)
ours_rss=$(val "$ours" peer_client_peak_rss_kib)
node_rate=$(val "$node_out" node_xcs_msgs_per_s)
node_rss=$(val "$node_out" node_xcs_peak_rss_kib)
awk -v a="$ours_rate" -v b="$node_rate" -v c="$ours_rss" -v d="$node_rss" 'BEGIN {
    printf "ours_vs_node_xcs_msgs_per_s_ratio: %.2f ratio\n", a / b
    printf "ours_vs_node_xcs_peak_rss_ratio: %.3f ratio\n", c / d
}'

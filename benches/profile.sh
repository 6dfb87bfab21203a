#!/usr/bin/env bash
# Instruction profile of the client's hot path with callgrind: COUNT downstream messages
# (~100-byte data) through the worker, one connection, window 100, against an emulator in
# another process (not profiled). Instruction counts do not depend on the machine's load.
#
#   benches/profile.sh [COUNT]            # default 20000; needs valgrind
#   benches/profile.sh COUNT emulator     # the emulator's side instead (the client runs
#                                         # natively): what bounds any client measured here
#
# Writes target/profile/callgrind.out and prints the inclusive and self costs of the
# crate's functions, libc's allocator and OpenSSL's read/write.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-20000}
SIDE=${2:-client}
OUT=target/profile
mkdir -p "$OUT"
cargo build -q --release --features emulator --example bench
B=target/release/examples/bench

if [ "$SIDE" = emulator ]; then
    coproc EMU { exec valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
        "$B" --serve-emulator 2>"$OUT/valgrind.log"; }
else
    coproc EMU { exec "$B" --serve-emulator; }
fi
EMU_IN=${EMU[1]}
trap 'eval "exec ${EMU_IN}>&-"; wait' EXIT
read -r -t 60 line <&"${EMU[0]}"
PORT=${line#port }

if [ "$SIDE" = emulator ]; then
    "$B" --peer-client "$PORT" "$COUNT" >"$OUT/bench.txt"
    eval "exec ${EMU_IN}>&-"
    wait
    trap - EXIT
else
    valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
        "$B" --peer-client "$PORT" "$COUNT" >"$OUT/bench.txt" 2>"$OUT/valgrind.log"
fi
total=$(grep -m1 -o 'Collected : [0-9]*' "$OUT/valgrind.log" | grep -o '[0-9]*$')
echo "# $COUNT messages; $total instructions in all (connect and start-up included)"
echo "# inclusive, the crate and its I/O:"
callgrind_annotate --inclusive=yes "$OUT/callgrind.out" 2>/dev/null |
    grep -E 'fcm_xmpp::|SSL_(read|write)_ex|malloc.c:(malloc|free) |miniserde::json::de::from_str' |
    sed -E 's/ \[[^]]*\]$//' | head -30
echo "# self:"
callgrind_annotate "$OUT/callgrind.out" 2>/dev/null | sed -n '/file:function/,$p' | sed -n '3,22p' |
    sed -E 's/ \[[^]]*\]$//'

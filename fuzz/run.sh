#!/usr/bin/env bash
# Runs one fuzz target for a bounded time:
#   fuzz/run.sh TARGET [SECONDS [EXTRA LIBFUZZER FLAGS...]]
# New inputs go to fuzz/corpus/TARGET (ignored by git); the committed seeds in
# fuzz/seeds/TARGET are read but never written. Crashes land in
# fuzz/artifacts/TARGET. See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh TARGET [SECONDS]}
secs=${2:-600}
shift $(( $# < 2 ? $# : 2 ))
case $target in
    stanza_reader) max_len=65536 ;;
    *) max_len=16384 ;;
esac
mkdir -p "corpus/$target"
RUSTC_BOOTSTRAP=1 exec cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_len=$max_len -timeout=10 -rss_limit_mb=2048 \
    -max_total_time="$secs" -print_final_stats=1 "$@"

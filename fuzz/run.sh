#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after another, one
# process at a time at the lowest priority, and prints executions and crashes per target.
#
#   fuzz/run.sh                 # every target, 600 s each
#   fuzz/run.sh 60              # every target, 60 s each
#   fuzz/run.sh 600 path xfcc   # two targets
#
# Environment: SANITIZER (none | address; default none, see README.md), TOOLCHAIN
# (default nightly), MAX_LEN (default 4096), RSS_MB (default 2048), TIMEOUT (seconds per
# input, default 10), CORPUS_OUT (a directory to grow instead of fuzz/corpus/TARGET).
# New inputs are written to a scratch corpus, not the committed one: `cargo fuzz cmin`
# and a copy decide what is committed (README.md).
set -euo pipefail

cd "$(dirname "$0")"
seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo "+${TOOLCHAIN:-nightly}" fuzz list)
fi
sanitizer=${SANITIZER:-none}
toolchain=${TOOLCHAIN:-nightly}

if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi

nice -n 19 cargo "+$toolchain" fuzz build -s "$sanitizer" >&2

mkdir -p logs
summary=()
for t in "${targets[@]}"; do
    scratch=${CORPUS_OUT:-target/corpus}/$t
    mkdir -p "$scratch" "artifacts/$t"
    log=logs/$t.log
    echo "== $t: ${seconds}s" >&2
    start=$(date +%s)
    # Fixed regressions seed the scratch corpus (open ones would stop the run at once).
    for f in regressions/"$t"/*; do
        [ -f "$f" ] || continue
        grep -qE "^$t/$(basename "$f")([[:space:]]|$)" regressions/open.txt 2>/dev/null || cp "$f" "$scratch/"
    done
    # The scratch corpus comes first: new inputs go there; the committed one is read only.
    set +e
    nice -n 19 cargo "+$toolchain" fuzz run -s "$sanitizer" "$t" "$scratch" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len="${MAX_LEN:-4096}" -rss_limit_mb="${RSS_MB:-2048}" \
        -timeout="${TIMEOUT:-10}" -print_final_stats=1 \
        -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        >"$log" 2>&1
    rc=$?
    set -e
    took=$(( $(date +%s) - start ))
    # Fork mode: the parent's status lines read `#EXECS: cov: N ... oom/timeout/crash: a/b/c`.
    last=$( (grep -E '^#[0-9]+: cov:' "$log" || true) | tail -1)
    execs=$(echo "$last" | grep -oE '^#[0-9]+' | tr -d '#' || true)
    cov=$(echo "$last" | grep -oE 'cov: [0-9]+' || true)
    crashes=$(echo "$last" | grep -oE 'oom/timeout/crash: [0-9/]+' | cut -d' ' -f2 || true)
    units=$(find "$scratch" -type f | wc -l)
    summary+=("$(printf '%-16s %6ss %12s  %-9s  %6s  %s  (exit %s)' \
        "$t" "$took" "${execs:-?}" "${cov:-cov: ?}" "$units" "$crashes" "$rc")")
    if [ "${crashes:-0/0/0}" != 0/0/0 ] || [ "$rc" -ne 0 ]; then
        (grep -E 'panicked at|Test unit written to|ERROR: libFuzzer' "$log" || true) | head -5 >&2
    fi
done

echo
echo "target             time    executions  coverage   corpus  oom/timeout/crash"
printf '%s\n' "${summary[@]}"
echo "logs: fuzz/logs/TARGET.log; crashing inputs: fuzz/artifacts/TARGET/"

#!/usr/bin/env bash
# Stress runner: the e2e test binary N times in a row with busy CPU hogs beside it, so
# a test that depends on timing fails here before it fails in CI.
#
#   scripts/stress.sh                  # 30 runs, 2 hogs
#   N=5 scripts/stress.sh              # 5 runs
#   N=100 scripts/stress.sh proxy::    # extra arguments go to the test binary (a filter)
#
# Environment:
#   N            runs (default 30)
#   HOGS         busy processes beside the tests (default 2)
#   RUN_TIMEOUT  seconds one run may take before it counts as failed (default 900)
#   BUILD_TRIES  build attempts, BUILD_WAIT seconds apart (defaults 1 and 30): others may
#                be mid-edit when the build starts
#   KEEP         directory for the logs of failing runs (default: a new temp directory)
#
# The binary is built once and copied, so a rebuild by someone else during the runs does
# not change what is being tested. Exits 1 if any run failed, 2 if the build failed.
set -euo pipefail

N=${N:-30}
HOGS=${HOGS:-2}
RUN_TIMEOUT=${RUN_TIMEOUT:-900}
BUILD_TRIES=${BUILD_TRIES:-1}
BUILD_WAIT=${BUILD_WAIT:-30}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${KEEP:-$(mktemp -d "${TMPDIR:-/tmp}/portcullis-stress.XXXXXX")}
mkdir -p "$out"

hogs=()
cleanup() {
    local pid
    for pid in "${hogs[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${hogs[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    hogs=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Build once; the executable comes from cargo's JSON messages, not a guessed path.
bin=""
for ((try = 1; try <= BUILD_TRIES; try++)); do
    if cargo test --no-run --test e2e --message-format=json >"$out/build.json" 2>"$out/build.log"; then
        bin=$(jq -r 'select(.reason == "compiler-artifact" and .target.name == "e2e"
                            and .executable != null) | .executable' "$out/build.json" | tail -n 1)
        [[ -n "$bin" && -x "$bin" ]] && break
        echo "stress: build finished but no e2e executable was reported" >&2
    else
        echo "stress: build failed (try $try of $BUILD_TRIES):" >&2
        jq -r 'select(.reason == "compiler-message" and .message.level == "error")
               | .message.rendered' "$out/build.json" 2>/dev/null | head -n 20 >&2 || true
        tail -n 3 "$out/build.log" >&2
    fi
    bin=""
    if ((try < BUILD_TRIES)); then
        sleep "$BUILD_WAIT"
    fi
done
if [[ -z "$bin" ]]; then
    echo "stress: no e2e binary; build output in $out/build.json and $out/build.log" >&2
    exit 2
fi
cp "$bin" "$out/e2e"
echo "stress: $(basename "$bin"), $N runs, $HOGS CPU hogs, logs of failures in $out"

for ((h = 0; h < HOGS; h++)); do
    yes >/dev/null &
    hogs+=($!)
done

declare -A failed_tests=()
failures=0
for ((i = 1; i <= N; i++)); do
    log="$out/run-$i.log"
    start=$SECONDS
    if timeout --kill-after=10 "$RUN_TIMEOUT" "$out/e2e" "$@" >"$log" 2>&1; then
        echo "run $i/$N: pass ($((SECONDS - start)) s)"
        rm -f "$log"
        continue
    else
        rc=$?
    fi
    failures=$((failures + 1))
    names=$(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$log" | sort -u | tr '\n' ' ')
    if ((rc == 124 || rc == 137)); then
        names="${names}timeout(${RUN_TIMEOUT}s)"
    fi
    [[ -n "$names" ]] || names="exit-$rc(no-test-named)"
    echo "run $i/$N: FAIL ($((SECONDS - start)) s): $names -> $log"
    for t in $names; do
        failed_tests[$t]=$((${failed_tests[$t]:-0} + 1))
    done
done

cleanup
echo
echo "stress: $N runs, $failures failed"
for t in "${!failed_tests[@]}"; do
    echo "  ${failed_tests[$t]}x $t"
done
if ((failures > 0)); then
    echo "stress: logs of the failing runs are in $out"
    exit 1
fi
if [[ -z "${KEEP:-}" ]]; then
    rm -rf "$out"
fi
echo "stress: all passed"

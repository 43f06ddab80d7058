#!/usr/bin/env bash
# Load comparison: portcullis vs nginx, HAProxy and Caddy as TLS-terminating proxies in
# front of the same loopback upstream. See benches/README.md.
#
#   benches/compare.sh            # full run (3 rounds x 8 s per measurement), ~13 min
#   QUICK=1 benches/compare.sh    # smoke test (1 round x 2 s, 1,000 idle connections)
#
# Environment: ROUNDS, DURATION (seconds), CONNS (wrk connections), IDLE_CONNS (memory
# test), CARGO_TARGET_DIR (default: target), OUT (default: benches/RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v taskset >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO apt-get install -y "${need[@]}"
fi
if ! command -v caddy >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get install -y caddy || echo "caddy not installable: skipping it"
fi
# Distribution packages start system services; the benchmark runs its own instances.
for s in nginx haproxy caddy; do
    systemctl stop "$s" >/dev/null 2>&1 || service "$s" stop >/dev/null 2>&1 || true
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# One invocation for both, so cargo unifies dev-dependency features once and a second run
# rebuilds nothing.
cargo build --release --bin portcullis --bench upstream
UPSTREAM_BIN=$(cargo build --release --bin portcullis --bench upstream --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "upstream" and m.get("executable"):
        print(m["executable"])')

ulimit -n "$(ulimit -Hn)" || true
exec python3 benches/compare.py \
    --portcullis "$CARGO_TARGET_DIR/release/portcullis" \
    --upstream "$UPSTREAM_BIN" \
    --command "${COMPARE_COMMAND:-$([ "${QUICK:-0}" = 1 ] && echo "QUICK=1 ")benches/compare.sh}"

#!/usr/bin/env bash
# Soak and connection-hold runs against the release binary (driver: benches/soak.rs).
# See benches/README.md, "Soak and hold".
#
#   benches/soak.sh                      # 10-minute soak: mixed traffic, SIGHUP every 5 s
#   benches/soak.sh --minutes 0.5        # quick check
#   benches/soak.sh --hold 10000         # 10,000 concurrent idle TLS connections: memory
#   nice -n 5 benches/soak.sh            # on a shared machine
#
# Extra arguments go to the driver (--workers N, --reload-every SECS, --hold-secs S,
# --keep). Exit code: 0 pass, 1 a failure (the report says which), 2 usage.
# CARGO_TARGET_DIR: where the release build goes (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --bin portcullis
# --hold N needs N descriptors in the driver and N more in the gateway (its child).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open-file limit: $(ulimit -n)"
exec cargo bench --bench soak -- --binary "$CARGO_TARGET_DIR/release/portcullis" "$@"

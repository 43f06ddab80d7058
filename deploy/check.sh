#!/usr/bin/env bash
# Static checks of deploy/, each run only when its tool is installed (CI does not install
# them): `promtool check rules` and `promtool test rules` on the alert rules (Debian:
# apt-get install prometheus), and `systemd-analyze verify` on the unit (Debian: systemd).
# verify needs the ExecStart binary to exist, so it checks a copy of the unit whose
# /usr/local/bin/portcullis is replaced by BINARY (default: the debug or release build).
#   deploy/check.sh [BINARY]
# deploy/prometheus/smoke.sh runs the rules and the dashboard against a live gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v promtool >/dev/null 2>&1; then
  echo "== promtool check rules deploy/prometheus/alerts.yml"
  promtool check rules deploy/prometheus/alerts.yml
  echo "== promtool test rules deploy/prometheus/alerts_test.yml"
  promtool test rules deploy/prometheus/alerts_test.yml
else
  echo "== promtool not installed: alert rules not checked (apt-get install prometheus)"
fi

if command -v systemd-analyze >/dev/null 2>&1; then
  target="${CARGO_TARGET_DIR:-target}"
  bin="${1:-}"
  if [ -z "$bin" ]; then
    for candidate in "$target/debug/portcullis" "$target/release/portcullis"; do
      if [ -x "$candidate" ]; then
        bin=$candidate
        break
      fi
    done
  fi
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "deploy/check.sh: no portcullis binary to verify the unit with (cargo build first, or pass its path)" >&2
    exit 1
  fi
  bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
  echo "== systemd-analyze verify deploy/systemd/portcullis.service (ExecStart: $bin)"
  unit_dir=$(mktemp -d)
  trap 'rm -rf "$unit_dir"' EXIT
  sed "s#/usr/local/bin/portcullis#$bin#g" deploy/systemd/portcullis.service >"$unit_dir/portcullis.service"
  grep -q "^ExecStart=$bin run --config " "$unit_dir/portcullis.service" || {
    echo "deploy/check.sh: ExecStart of the unit is not /usr/local/bin/portcullis run --config ..." >&2
    exit 1
  }
  systemd-analyze verify "$unit_dir/portcullis.service"
  echo "ok"
else
  echo "== systemd-analyze not installed: unit not verified"
fi

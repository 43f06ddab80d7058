#!/usr/bin/env bash
# Smoke test of the monitoring setup against a real gateway and a real Prometheus, on
# loopback only:
#   1. builds the release binary and starts `portcullis demo` (every authenticator kind,
#      the built-in echo upstream, free ports);
#   2. lints a live scrape of /metrics with `promtool check metrics`;
#   3. starts Prometheus (temporary data directory, a generated prometheus.yml scraping
#      the demo's admin listener every second, alerts.yml loaded) on a free port;
#   4. sends a few requests, waits for a scrape, and fails unless the series are there,
#      every alert rule evaluates, and every query of deploy/grafana/portcullis.json runs.
# Needs: cargo, curl, jq, and Debian's `prometheus` package (prometheus, promtool).
# Set PORTCULLIS_BIN to use an existing binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

for tool in prometheus promtool curl jq; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "smoke: $tool not found (apt-get install prometheus curl jq)" >&2
    exit 1
  fi
done

work=$(mktemp -d -t portcullis-smoke.XXXXXX)
demo_pid=""
prom_pid=""
demo_dir=""
cleanup() {
  local rc=$?
  for pid in $prom_pid $demo_pid; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $prom_pid $demo_pid; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    for log in "$work"/*.log; do
      [ -s "$log" ] && { echo "--- last lines of $(basename "$log")" >&2; tail -n 20 "$log" >&2; }
    done
  fi
  case "$demo_dir" in
    /tmp/portcullis-demo-*) rm -rf "$demo_dir" ;;
  esac
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "smoke: FAILED: $*" >&2
  exit 1
}

# Polls "$@" until it succeeds or `deadline` seconds have passed.
wait_for() {
  local deadline=$1 what=$2
  shift 2
  local end=$((SECONDS + deadline))
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || fail "timed out after ${deadline}s waiting for $what"
    sleep 0.5
  done
}

# A loopback port nothing listens on (Prometheus cannot report the port it picked for :0).
free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  fail "no free loopback port found"
}

if [ -n "${PORTCULLIS_BIN:-}" ]; then
  bin=$PORTCULLIS_BIN
else
  echo "== cargo build --release"
  cargo build --release --locked --quiet
  bin="${CARGO_TARGET_DIR:-$root/target}/release/portcullis"
fi
[ -x "$bin" ] || fail "$bin is not an executable"

echo "== portcullis demo --port 0"
"$bin" demo --port 0 >"$work/demo.log" 2>"$work/demo-stderr.log" &
demo_pid=$!
demo_ready() {
  kill -0 "$demo_pid" 2>/dev/null || fail "the demo exited"
  grep -q '^curl http://.*/metrics$' "$work/demo.log"
}
wait_for 60 "the demo to start" demo_ready
admin=$(sed -n 's#^curl http://\(.*\)/metrics$#\1#p' "$work/demo.log" | head -n 1)
public_port=$(sed -n 's#^curl --cacert .* https://localhost:\([0-9]*\)/public/hello$#\1#p' "$work/demo.log" | head -n 1)
ca=$(sed -n 's#^curl --cacert \([^ ]*\) https://localhost:[0-9]*/public/hello$#\1#p' "$work/demo.log" | head -n 1)
demo_dir=$(dirname "$ca")
case "$admin" in 127.0.0.1:*) ;; *) fail "admin listener '$admin' is not on loopback" ;; esac
[ -n "$public_port" ] && [ -f "$ca" ] || fail "could not read the public port and CA from the demo output"
echo "   public https://127.0.0.1:$public_port, admin http://$admin"

echo "== promtool check metrics (live scrape of http://$admin/metrics)"
curl -fsS "http://$admin/metrics" >"$work/scrape.txt"
if ! promtool check metrics <"$work/scrape.txt" >"$work/check-metrics.log" 2>&1; then
  cat "$work/check-metrics.log" >&2
  fail "promtool check metrics found problems"
fi
echo "   ok ($(grep -c '^# TYPE ' "$work/scrape.txt") families)"

prom_port=$(free_port)
prom="http://127.0.0.1:$prom_port"
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $root/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: portcullis
    static_configs:
      - targets: ["$admin"]
EOF
echo "== prometheus on $prom"
prometheus \
  --config.file="$work/prometheus.yml" \
  --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prom_port" \
  >"$work/prometheus.log" 2>&1 &
prom_pid=$!
prom_ready() {
  kill -0 "$prom_pid" 2>/dev/null || fail "prometheus exited"
  curl -fsS "$prom/-/ready" >/dev/null 2>&1
}
wait_for 60 "prometheus to be ready" prom_ready

echo "== requests"
request() { # expected-status path [curl args]
  local want=$1 path=$2
  shift 2
  local got
  got=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$ca" "$@" "https://127.0.0.1:$public_port$path")
  [ "$got" = "$want" ] || fail "GET $path answered $got, expected $want"
}
for _ in 1 2 3 4 5; do
  request 200 /public/hello
done
request 404 /nowhere
request 401 /staff/hello
request 401 /staff/hello -u demo:wrong
echo "   5 x 200 /public/hello, 404 /nowhere, 401 /staff/hello (twice)"

# Instant query; prints the JSON result array.
query() {
  curl -fsS "$prom/api/v1/query" --data-urlencode "query=$1" |
    jq -e 'select(.status == "success") | .data.result' ||
    fail "query failed: $1"
}
scraped() {
  [ "$(query 'sum(portcullis_requests_total{route="public",status="200"})' | jq -r '.[0].value[1] // "0"')" = 5 ]
}
wait_for 60 "a scrape with the requests" scraped

echo "== series in Prometheus"
expect() { # description promql: fails unless the query returns at least one series
  local result
  result=$(query "$2")
  [ "$(jq length <<<"$result")" -gt 0 ] || fail "no series for $1: $2"
  echo "   $1: $(jq -c '[.[] | .metric + {value: .value[1]}] | .[0:3]' <<<"$result")"
}
expect "up" 'up{job="portcullis"} == 1'
expect "build info" 'portcullis_build_info == 1'
expect "public 200s" 'portcullis_requests_total{route="public",status="200"} == 5'
expect "unrouted 404" 'portcullis_requests_total{route="-",status="404"} >= 1'
expect "staff 401s" 'portcullis_requests_total{route="staff",status="401"} == 2'
expect "basic decisions" 'sum by (result) (portcullis_auth_decisions_total{authenticator="staff"}) > 0'
expect "upstream successes" 'portcullis_upstream_requests_total{upstream="echo",outcome="success"} >= 5'
expect "latency histogram" 'portcullis_request_duration_seconds_count{route="public"} == 5'
expect "healthy targets" 'portcullis_upstream_healthy_targets{upstream="echo"} >= 1'
expect "certificate expiry" 'portcullis_certificate_expiry_timestamp_seconds{cert="server"} > time()'
expect "process" 'process_resident_memory_bytes > 0'

echo "== alert rules evaluate"
rules_ok() {
  local rules
  rules=$(curl -fsS "$prom/api/v1/rules")
  [ "$(jq '[.data.groups[].rules[]] | length' <<<"$rules")" -ge 1 ] &&
    [ "$(jq '[.data.groups[].rules[] | select(.health != "ok")] | length' <<<"$rules")" = 0 ]
}
wait_for 30 "every alert rule to evaluate" rules_ok
rules=$(curl -fsS "$prom/api/v1/rules")
echo "   $(jq '[.data.groups[].rules[]] | length' <<<"$rules") rules healthy; firing: $(jq -c '[.data.groups[].rules[] | select(.state == "firing") | .name]' <<<"$rules")"

echo "== dashboard queries run"
count=0
while IFS= read -r expr; do
  q=${expr//\$__rate_interval/1m}
  q=${q//\$job/portcullis}
  q=${q//\$instance/.+}
  query "$q" >/dev/null
  count=$((count + 1))
done < <(jq -r '.. | objects | .expr? // empty' "$root/deploy/grafana/portcullis.json")
[ "$count" -gt 0 ] || fail "no queries in deploy/grafana/portcullis.json"
echo "   $count queries ok"

echo "smoke: ok"

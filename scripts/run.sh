#!/usr/bin/env bash
# Runs the whole platform on this machine: brings up PostgreSQL, Redis and
# RabbitMQ (installing them where missing), validates the configuration,
# builds, starts every service that exists, prints the URLs, and stops
# everything on Ctrl-C.
#
#   scripts/run.sh
#
# Logs go to .stack/logs/<service>.log. The configuration is config/local.toml;
# override any value with SNAKEPAY_<SECTION>__<KEY>.
#
# Every HTTP endpoint (APIs, web, processor simulator, admin/metrics ports)
# serves TLS 1.2/1.3 with certificates of a local CA created on the first run
# in .stack/tls (scripts/lib/tls.sh); the services run with
# .stack/tls/snakepay.toml, the configuration above with https URLs and the
# certificates added. SNAKEPAY_TLS=0 runs plain HTTP instead.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/web.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/tls.sh"
cd "$REPO_ROOT"

export SNAKEPAY_CONFIG="${SNAKEPAY_CONFIG:-$REPO_ROOT/config/local.toml}"
PROFILE="${SNAKEPAY_PROFILE:-dev}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
BIN_DIR="$TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"
LOG_DIR="$REPO_ROOT/.stack/logs"
TLS_DIR="$REPO_ROOT/.stack/tls"
USE_TLS="${SNAKEPAY_TLS:-1}"
SCHEME=$([ "$USE_TLS" = 0 ] && echo http || echo https)
# "<config section>=<certificate name>" of every listener.
TLS_LISTENERS=(
  processor_sim=processor-sim
  integration=integration
  external_api=external-api
  internal_api=internal-api
  web=web
)

# The services, in start order: "<package (= binary)> <config section with
# its listen_addr>". A service is started when its binary was built, so the
# list can name services before they land.
SERVICES=(
  "snakepay-processor-sim processor_sim"
  "snakepay-integration integration"
  "snakepay-external-api external_api"
  "snakepay-internal-api internal_api"
  "snakepay-web web"
)

# Prometheus on 127.0.0.1:9090 with deploy/observability/prometheus.yml,
# scraping every service's admin port; its data stays in .stack/prometheus.
# Installed when missing; skipped (the platform runs without it) when it
# cannot be installed or the port is taken.
PROMETHEUS_PORT=9090
start_prometheus() {
  say "Prometheus"
  if ! (ensure_prometheus); then
    note "Prometheus is not available; running without it"
    return 0
  fi
  if port_open "$PROMETHEUS_PORT"; then
    note "something already listens on 127.0.0.1:$PROMETHEUS_PORT; not starting Prometheus"
    return 0
  fi
  mkdir -p "$REPO_ROOT/.stack/prometheus"
  local prometheus_config="$REPO_ROOT/deploy/observability/prometheus.yml"
  if [ "$USE_TLS" != 0 ]; then
    # The same file, scraping the admin ports over https with the local CA.
    tls_prometheus_config "$prometheus_config" "$TLS_DIR/prometheus.yml" "$TLS_DIR/ca.pem"
    prometheus_config="$TLS_DIR/prometheus.yml"
  fi
  setsid prometheus \
    --config.file="$prometheus_config" \
    --storage.tsdb.path="$REPO_ROOT/.stack/prometheus" \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
    >"$LOG_DIR/prometheus.log" 2>&1 &
  pids+=("$!")
  if wait_for 30 port_open "$PROMETHEUS_PORT"; then
    ok "http://127.0.0.1:$PROMETHEUS_PORT  (alerts /alerts, targets /targets; log .stack/logs/prometheus.log)"
  else
    note "Prometheus did not open port $PROMETHEUS_PORT; see .stack/logs/prometheus.log"
  fi
}

# The listen_addr of a config section, read from the configuration file.
listen_url() {
  python3 -c 'import sys, tomllib; s = tomllib.load(open(sys.argv[1], "rb")).get(sys.argv[2], {}); print(("https://" if "tls" in s else "http://") + s.get("listen_addr", "?"))' \
    "$SNAKEPAY_CONFIG" "$1"
}

"$REPO_ROOT/scripts/stack.sh" up

say "building (cargo, profile $PROFILE)"
cargo build --locked --profile "$PROFILE" --workspace --bins
ok "built"

say "building the web front (web/ → web/dist)"
ensure_node
web_deps
web_build >/dev/null || die "the web front's build failed; run \`node web/build.mjs\` to see why"
ok "built"

if [ "$USE_TLS" != 0 ]; then
  say "TLS: local CA and service certificates — $TLS_DIR"
  local_pki "$TLS_DIR" "${TLS_LISTENERS[@]#*=}"
  tls_config "$SNAKEPAY_CONFIG" "$TLS_DIR/snakepay.toml" "$TLS_DIR" "${TLS_LISTENERS[@]}"
  export SNAKEPAY_CONFIG="$TLS_DIR/snakepay.toml"
  ok "CA $TLS_DIR/ca.pem (trust it in a browser, or use curl --cacert)"
fi

say "configuration $SNAKEPAY_CONFIG"
"$BIN_DIR/snakepay-config-check" || die "fix the configuration above and re-run"

present=()
for service in "${SERVICES[@]}"; do
  if [ -x "$BIN_DIR/${service%% *}" ]; then present+=("$service"); fi
done

ADMIN="$BIN_DIR/snakepay-admin"
say "card vault key ring"
"$ADMIN" keys init >/dev/null || die "cannot create the key ring"
ok "$(sed -n 's/^key_ring_path = "\(.*\)"/\1/p' "$SNAKEPAY_CONFIG")"

say "migrating databases"
"$ADMIN" migrate >/dev/null || die "migrations failed"
ok "control database and ${SHARD_COUNT} shards at the latest schema"

# One demo merchant per machine, created on the first run and reused, so
# its keys stay the same from run to run.
DEMO_FILE="$REPO_ROOT/.stack/demo-merchant.json"
if [ ! -s "$DEMO_FILE" ]; then
  mkdir -p "$(dirname "$DEMO_FILE")"
  "$ADMIN" merchant create --name "Demo Shop" --country DE >"$DEMO_FILE.tmp" || die "cannot create the demo merchant"
  mv "$DEMO_FILE.tmp" "$DEMO_FILE"
fi
say "demo merchant (test mode) — $DEMO_FILE"
ok "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["merchant"]); print("    secret key:      " + d["secret_key"]); print("    publishable key: " + d["publishable_key"])' "$DEMO_FILE")"

# A back-office token for the Internal API, signed with the local key
# (created on the first run); valid for 8 hours.
say "internal api operator token (8 h) — snakepay-admin token issue --role operator --subject … [--mfa]"
OPERATOR_TOKEN=$("$ADMIN" token issue --role operator --subject local-operator --mfa --ttl 8h |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])') || die "cannot issue an operator token"
ok "$OPERATOR_TOKEN"
if [ "$USE_TLS" != 0 ]; then
  note "curl --cacert $TLS_DIR/ca.pem -H \"Authorization: Bearer \$TOKEN\" $SCHEME://127.0.0.1:8084/v1/payments"
else
  note "curl -H \"Authorization: Bearer \$TOKEN\" $SCHEME://127.0.0.1:8084/v1/payments"
fi

say "dependencies"
ok "PostgreSQL  postgres://$DB_ROLE:$DB_PASSWORD@$PG_HOST:$PG_PORT/snakepay_${LOCAL_REGION}_control (+ ${SHARD_COUNT} shards)"
ok "Redis       redis://127.0.0.1:$REDIS_PORT/0"
ok "RabbitMQ    amqp://guest:guest@127.0.0.1:$AMQP_PORT/$RABBITMQ_VHOST"

if [ "${#present[@]}" -eq 0 ]; then
  say "no services have landed yet"
  note "services arrive with the next issues"
  exit 0
fi

mkdir -p "$LOG_DIR"
pids=()
stop_all() {
  trap - INT TERM EXIT
  stop_processes "${pids[@]}"
  ok "stopped"
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

say "starting services"
for service in "${present[@]}"; do
  package="${service%% *}"
  # Its own session: Ctrl-C reaches only this script, which stops the
  # services in order; a service that exits by itself is then a real crash.
  setsid "$BIN_DIR/$package" >"$LOG_DIR/$package.log" 2>&1 &
  pids+=("$!")
  ok "$package  $(listen_url "${service##* }")  (log .stack/logs/$package.log)"
done

start_prometheus

if [ -x "$BIN_DIR/snakepay-web" ]; then
  say "demo shop: $(listen_url web)/demo/"
  note "pay with 4242 4242 4242 4242, any future expiry date, any CVC (more test cards on the page)"
fi

say "running; press Ctrl-C to stop"
# Returns when any service exits, so a crash is noticed rather than hidden.
wait -n "${pids[@]}" || true
die "a service exited; see the logs in .stack/logs"

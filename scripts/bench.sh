#!/usr/bin/env bash
# Benchmarks the platform on this machine (docs/performance.md): builds in
# release mode, starts PostgreSQL, Redis and RabbitMQ like scripts/run.sh,
# then the processor simulator, the integration service and the External
# API on databases, a broker vhost and ports of their own (bench/config.toml,
# recreated every run), runs the pgbench ceiling and the scenarios with a
# progress display, prints the table, writes bench/results/<UTC time>.json
# and .svg, and stops what it started.
#
#   scripts/bench.sh                 the full run (about 3 minutes)
#   scripts/bench.sh --smoke         a few seconds with the debug binaries
#                                    (the test suite's step): proves the
#                                    benchmark works, measures nothing
#   scripts/bench.sh -- ARGS…        passes ARGS to snakepay-bench, e.g.
#                                    -- --scenarios open-loop --rate-per-second 800
#   scripts/bench.sh --no-build      reuse the binaries already built
#   scripts/bench.sh --capture-sql   no benchmark: logs every statement the
#                                    platform runs for one checkout (after a
#                                    warm-up one) to .stack/bench/checkout-sql.log,
#                                    to compare with bench/pgbench/checkout.sql
#                                    (bench/pgbench/README.md)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO_ROOT"

SMOKE=""
CAPTURE=""
BUILD=1
BENCH_ARGS=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --capture-sql) CAPTURE=1 ;;
    --no-build) BUILD="" ;;
    --) shift; BENCH_ARGS=("$@"); break ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
  shift
done

export SNAKEPAY_CONFIG="$REPO_ROOT/bench/config.toml"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
STATE_DIR="$REPO_ROOT/.stack/bench"
LOG_DIR="$STATE_DIR/logs"
# The benchmark's own databases and vhost (bench/config.toml); their names
# start with the prefix the load generator uses to tell its PostgreSQL
# backends from those of anything else on the server.
BENCH_DB_PREFIX="snakepay_bench"
BENCH_VHOST="snakepay_bench"
EXTERNAL_API_PORT=18081
# The services on the checkout path, in start order: "<binary> <port>".
SERVICES=(
  "snakepay-processor-sim 18090"
  "snakepay-integration 18082"
  "snakepay-external-api $EXTERNAL_API_PORT"
)
PACKAGES=(-p snakepay-processor-sim -p snakepay-integration -p snakepay-external-api -p snakepay-admin -p snakepay-bench)

if [ -n "$SMOKE" ]; then
  # The test suite's debug build already holds these; this only links
  # what is missing. Results stay out of bench/results.
  say "building (debug, as the test suite did)"
  if [ -n "$BUILD" ]; then
    # The test run built the service binaries (its process tests start
    # them); building them again with another feature set would recompile
    # half the tree, so only what is missing is built here.
    missing=()
    for binary in snakepay-processor-sim snakepay-integration snakepay-external-api snakepay-admin; do
      [ -x "$TARGET_DIR/debug/$binary" ] || missing+=(-p "$binary")
    done
    if [ "${#missing[@]}" -gt 0 ]; then cargo build --locked --bins "${missing[@]}"; fi
    cargo build --locked -p snakepay-bench --bins
  fi
  BIN_DIR="$TARGET_DIR/debug"
  RESULTS_DIR="$STATE_DIR/results"
  LABEL="smoke-$(date -u +%Y%m%dT%H%M%SZ)"
  RUN_ARGS=(--duration-seconds 3 --warmup-seconds 1 --concurrency 4 --rate-per-second 20
    --pgbench-seconds 2 --pgbench-clients 2)
else
  say "building (release)"
  if [ -n "$BUILD" ]; then cargo build --locked --release --bins "${PACKAGES[@]}"; fi
  BIN_DIR="$TARGET_DIR/release"
  RESULTS_DIR="$REPO_ROOT/bench/results"
  LABEL="$(date -u +%Y%m%dT%H%M%SZ)"
  RUN_ARGS=()
fi
ok "binaries in $BIN_DIR"

"$REPO_ROOT/scripts/stack.sh" up >/dev/null
ok "PostgreSQL, Redis and RabbitMQ are up"

PGBENCH="$(ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n 1 || true)"
[ -x "$PGBENCH" ] || PGBENCH="$(command -v pgbench || true)"
[ -x "$PGBENCH" ] || die "pgbench not found (it ships with the postgresql package)"

pg_url() { echo "postgres://$DB_ROLE:$DB_PASSWORD@$PG_HOST:$PG_PORT/$1"; }

say "fresh benchmark databases and broker vhost"
for name in "${BENCH_DB_PREFIX}_control" "${BENCH_DB_PREFIX}_shard_0" "${BENCH_DB_PREFIX}_shard_1"; do
  psql -q "$(pg_url postgres)" -v ON_ERROR_STOP=1 \
    -c "drop database if exists $name with (force)" -c "create database $name" >/dev/null ||
    die "cannot recreate database $name"
done
as_root rabbitmqctl -q delete_vhost "$BENCH_VHOST" >/dev/null 2>&1 || true
as_root rabbitmqctl -q add_vhost "$BENCH_VHOST" >/dev/null || die "cannot create vhost $BENCH_VHOST"
as_root rabbitmqctl -q set_permissions -p "$BENCH_VHOST" guest '.*' '.*' '.*' >/dev/null ||
  die "cannot grant guest access to vhost $BENCH_VHOST"
rm -rf "$STATE_DIR"
mkdir -p "$LOG_DIR"
ADMIN="$BIN_DIR/snakepay-admin"
"$ADMIN" keys init >/dev/null || die "cannot create the key ring"
"$ADMIN" migrate >/dev/null || die "migrations failed"
SECRET_KEY="$("$ADMIN" merchant create --name "Bench Shop" --country DE |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["secret_key"])')" ||
  die "cannot create the benchmark merchant"
# The ceiling's own copy of a migrated shard: pgbench's rows must not land
# in a database the services read, where the relay would publish them.
CEILING_DB="${BENCH_DB_PREFIX}_ceiling"
psql -q "$(pg_url postgres)" -v ON_ERROR_STOP=1 \
  -c "drop database if exists $CEILING_DB with (force)" \
  -c "create database $CEILING_DB template ${BENCH_DB_PREFIX}_shard_0" >/dev/null ||
  die "cannot create the ceiling's database $CEILING_DB"
ok "databases ${BENCH_DB_PREFIX}_*, vhost $BENCH_VHOST, one merchant"

# Everything runs on one machine, so the services and pgbench reach
# PostgreSQL over its Unix socket when the server lets our role in there: a
# round trip costs about a fifth less than over loopback TCP, and a checkout
# is some twenty of them (docs/performance.md). Both sides use the same
# transport, so the ceiling stays comparable. SNAKEPAY_BENCH_PG_SOCKET_DIR=""
# keeps TCP.
PG_SOCKET_DIR="${SNAKEPAY_BENCH_PG_SOCKET_DIR-/var/run/postgresql}"
TRANSPORT="TCP $PG_HOST:$PG_PORT"
socket_url() { echo "postgres://$DB_ROLE:$DB_PASSWORD@localhost:$PG_PORT/$1?host=$PG_SOCKET_DIR"; }
if [ -n "$PG_SOCKET_DIR" ] && [ -S "$PG_SOCKET_DIR/.s.PGSQL.$PG_PORT" ] &&
  psql -q "$(socket_url postgres)" -c 'select 1' >/dev/null 2>&1; then
  sed -e "s#@$PG_HOST:$PG_PORT/\([a-z0-9_]*\)\"#@localhost:$PG_PORT/\1?host=$PG_SOCKET_DIR\"#g" \
    "$REPO_ROOT/bench/config.toml" >"$STATE_DIR/config.toml"
  grep -q "?host=$PG_SOCKET_DIR" "$STATE_DIR/config.toml" || die "cannot point bench/config.toml at the socket"
  export SNAKEPAY_CONFIG="$STATE_DIR/config.toml"
  pg_url() { socket_url "$1"; }
  TRANSPORT="the Unix socket in $PG_SOCKET_DIR"
fi
ok "PostgreSQL over $TRANSPORT"

# --capture-sql: the server logs every statement on the benchmark's
# databases (only for connections opened from now on, i.e. the services').
pg_super() { runuser -u postgres -- psql -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ -n "$CAPTURE" ]; then
  is_root || die "--capture-sql changes database settings as the postgres superuser: run as root"
  for name in "${BENCH_DB_PREFIX}_control" "${BENCH_DB_PREFIX}_shard_0" "${BENCH_DB_PREFIX}_shard_1"; do
    pg_super -c "alter database $name set log_statement = 'all'"
  done
fi

pids=()
stop_all() {
  trap - INT TERM EXIT
  stop_processes "${pids[@]}"
}
trap 'stop_all; exit 130' INT TERM
trap stop_all EXIT

say "starting services (logs in .stack/bench/logs)"
SERVICE_ARGS=()
for service in "${SERVICES[@]}"; do
  binary="${service%% *}" port="${service##* }"
  setsid "$BIN_DIR/$binary" >"$LOG_DIR/$binary.log" 2>&1 &
  pids+=("$!")
  SERVICE_ARGS+=(--service "${binary#snakepay-}=$!")
  wait_for 60 port_open "$port" || die "$binary did not open port $port; see $LOG_DIR/$binary.log"
  ok "$binary on 127.0.0.1:$port"
done
wait_for 60 curl -fsS "http://127.0.0.1:$EXTERNAL_API_PORT/readyz" ||
  die "the External API is not ready; see $LOG_DIR/snakepay-external-api.log"

if [ -n "$CAPTURE" ]; then
  PG_LOG="$(ls -t /var/log/postgresql/postgresql-*-main.log | head -n 1)"
  checkout() {
    curl -fsS -u "$SECRET_KEY:" -H "Idempotency-Key: capture-$1-$RANDOM$RANDOM" \
      "http://127.0.0.1:$EXTERNAL_API_PORT/v1/payment_intents" \
      -d amount=2000 -d currency=eur -d capture_method=automatic -d confirm=true \
      -d 'payment_method_data[type]=card' -d 'payment_method_data[card][number]=4242424242424242' \
      -d 'payment_method_data[card][exp_month]=12' -d 'payment_method_data[card][exp_year]=2034' \
      -d 'payment_method_data[card][cvc]=123' | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'
  }
  say "capturing one checkout's SQL from $PG_LOG"
  note "warm-up checkout: $(checkout 1)"
  sleep 2
  offset="$(stat -c %s "$PG_LOG")"
  note "captured checkout: $(checkout 2)"
  # The relay commits its pass after the broker's confirm.
  sleep 2
  # Lines of the benchmark's databases, with their continuation lines
  # (multi-line statements and parameters).
  tail -c "+$((offset + 1))" "$PG_LOG" |
    awk -v db="@${BENCH_DB_PREFIX}_" '/^[0-9]{4}-[0-9]{2}-[0-9]{2} / { keep = index($0, db) > 0 } keep' \
      >"$STATE_DIR/checkout-sql.log"
  python3 "$REPO_ROOT/bench/pgbench/generate.py" "$STATE_DIR/checkout-sql.log" >"$STATE_DIR/checkout.sql" ||
    die "cannot turn the captured log into a pgbench script"
  # Values (IDs, ciphertexts, the merchant) differ between captures, and
  # so may the interleaving and batching of the services' transactions;
  # the set of distinct statements, named by the hashes of their SQL, must not.
  if diff -u <(grep '^-- statement' "$REPO_ROOT/bench/pgbench/checkout.sql" | sort -u) \
    <(grep '^-- statement' "$STATE_DIR/checkout.sql" | sort -u); then
    ok "bench/pgbench/checkout.sql matches the platform's SQL"
  else
    note "the platform's SQL differs from bench/pgbench/checkout.sql (diff above);"
    note "cp .stack/bench/checkout.sql bench/pgbench/checkout.sql to adopt it"
  fi
  for name in "${BENCH_DB_PREFIX}_control" "${BENCH_DB_PREFIX}_shard_0" "${BENCH_DB_PREFIX}_shard_1"; do
    pg_super -c "alter database $name reset log_statement"
  done
  exit 0
fi

say "benchmark"
LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN_DIR/snakepay-bench" \
  --base-url "http://127.0.0.1:$EXTERNAL_API_PORT" \
  --secret-key "$SECRET_KEY" \
  --database-prefix "$BENCH_DB_PREFIX" \
  --pgbench "$PGBENCH" \
  --pgbench-script "$REPO_ROOT/bench/pgbench/checkout.sql" \
  --pgbench-url "$(pg_url "$CEILING_DB")" \
  --out-dir "$RESULTS_DIR" \
  --label "$LABEL" \
  --note "$(basename "$BIN_DIR") build, $(git rev-parse --short HEAD 2>/dev/null || echo unknown), PostgreSQL over $TRANSPORT, load average before: $LOAD" \
  "${SERVICE_ARGS[@]}" "${RUN_ARGS[@]}" "${BENCH_ARGS[@]}"

if [ -n "$SMOKE" ]; then
  python3 - "$RESULTS_DIR/$LABEL.json" "$RESULTS_DIR/$LABEL.svg" <<'PY' || die "the smoke run's results are incomplete"
import json, os, sys
report = json.load(open(sys.argv[1]))
assert os.path.getsize(sys.argv[2]) > 0, "no chart"
assert report["baseline"]["payments_per_second"] > 0, "the pgbench baseline completed nothing"
for scenario in report["scenarios"]:
    assert scenario["payments_per_second"] > 0, f"{scenario['scenario']} completed no payments"
print("  smoke results complete:", ", ".join(
    f"{s['scenario']} {s['completed']} done" for s in report["scenarios"]))
PY
fi

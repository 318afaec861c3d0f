#!/usr/bin/env bash
# Runs the whole test suite, exactly as CI does (.ci/run calls this):
# brings up the dependencies like scripts/run.sh, then formatting, clippy,
# cargo-deny (offline), the infrastructure checks, and every test.
#
#   scripts/test.sh
#
# Needs ../shared/advisory-db (or SNAKEPAY_ADVISORY_DB) for cargo-deny.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/web.sh"
cd "$REPO_ROOT"

# Pinned tool versions: deny.sh depends on cargo-deny's database layout.
NEXTEST_VERSION="0.9.143"
CARGO_DENY_VERSION="0.20.2"

# Where tests find the dependencies scripts/stack.sh brings up. Each test
# creates its own databases, vhosts and key prefixes under these.
export SNAKEPAY_TEST_POSTGRES_URL="postgres://$DB_ROLE:$DB_PASSWORD@$PG_HOST:$PG_PORT"
export SNAKEPAY_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export SNAKEPAY_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$AMQP_PORT"

failed=()
passed=()
# Runs one step, records the outcome, and carries on, so one run shows every
# problem; the script fails at the end if any step did.
step() {
  local name="$1"; shift
  say "$name"
  local started=$SECONDS
  if "$@"; then
    ok "$name ($((SECONDS - started)) s)"
    passed+=("$name")
  else
    printf '  %s✗%s %s failed\n' "$_red" "$_reset" "$name"
    failed+=("$name")
  fi
}

"$REPO_ROOT/scripts/stack.sh" up

say "a clean broker vhost for the tests"
if as_root rabbitmqctl -q delete_vhost "$RABBITMQ_TEST_VHOST" >/dev/null 2>&1 &&
  as_root rabbitmqctl -q add_vhost "$RABBITMQ_TEST_VHOST" >/dev/null &&
  as_root rabbitmqctl -q set_permissions -p "$RABBITMQ_TEST_VHOST" guest '.*' '.*' '.*' >/dev/null; then
  ok "vhost $RABBITMQ_TEST_VHOST recreated"
else
  note "could not recreate vhost $RABBITMQ_TEST_VHOST; tests reuse it as it is"
  "$REPO_ROOT/scripts/stack.sh" up >/dev/null
fi

say "tools"
ensure_cargo_tool cargo-nextest cargo-nextest "$NEXTEST_VERSION"
ensure_cargo_tool cargo-deny cargo-deny "$CARGO_DENY_VERSION"
ok "cargo-nextest $NEXTEST_VERSION, cargo-deny $CARGO_DENY_VERSION"
ensure_node
ensure_chromium
web_deps
# The browser tests (services/web) skip only where there is no browser;
# here there is one, so they must run.
export SNAKEPAY_REQUIRE_BROWSER=1 SNAKEPAY_CHROMIUM="$CHROMIUM"
ok "node $(node --version), $("$CHROMIUM" --version 2>/dev/null | head -n 1)"

step "format (cargo fmt --check)" cargo fmt --all --check
step "lint (cargo clippy -D warnings)" \
  cargo clippy --locked --workspace --all-targets --all-features -- -D warnings
step "dependencies (cargo deny, offline)" "$REPO_ROOT/scripts/lib/deny.sh"
# Type-checks and builds the checkout, then its unit tests (card checks,
# amounts, the build's promises); the browser tests run with the others.
step "web front (tsc, build, unit tests)" bash -c 'cd web && npm test --silent'
if [ -f deploy/aws/check.sh ]; then
  step "infrastructure (deploy/aws/check.sh)" bash deploy/aws/check.sh
fi
step "observability (deploy/observability/check.sh)" bash deploy/observability/check.sh
# The vault without its `decrypt` feature, as the External API links it:
# decryption code must not be compiled in, and sealing must still work.
step "tests: vault without decrypt" \
  cargo nextest run --locked --profile ci -p snakepay-vault --no-tests=pass
step "tests (cargo nextest, all features)" \
  cargo nextest run --locked --profile ci --workspace --all-features
# After the tests, whose build it reuses: the benchmark for a few seconds on
# the debug binaries, proving it runs end to end and writes its results. It
# measures nothing (benchmarks are never timed tests).
step "benchmark (smoke)" "$REPO_ROOT/scripts/bench.sh" --smoke

echo
if [ "${#failed[@]}" -gt 0 ]; then
  printf '%sFAILED:%s %s\n' "$_red" "$_reset" "${failed[*]}"
  exit 1
fi
say "all ${#passed[@]} steps passed"

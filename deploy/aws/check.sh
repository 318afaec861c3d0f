#!/usr/bin/env bash
# Offline checks of Snakepay's AWS deployment (deploy/aws): the project's test command runs
#   bash deploy/aws/check.sh
# Steps: tools -> npm ci -> tsc -> cdk synth -> unit tests -> cdk-nag -> cfn-lint -> checkov
#        -> network diagram + resource-kind coverage.
# Idempotent. Installs what is missing on Debian/Ubuntu (nodejs, graphviz, a Python venv with
# pinned cfn-lint, checkov and diagrams OUTSIDE the repo, reused between runs). Needs only the
# npm registry, PyPI and the Debian mirrors; makes no AWS call (synth uses cdk.context.json).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE_DIR="${SNAKEPAY_CACHE_DIR:-$HOME/.cache/snakepay}"
VENV="$CACHE_DIR/infra-venv"
OUT="$HERE/cdk.out"

# No telemetry, notices or update checks: the machines reach no AWS endpoint.
export CDK_DISABLE_CLI_TELEMETRY=true CDK_DISABLE_VERSION_CHECK=true
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
export PIP_DISABLE_PIP_VERSION_CHECK=1 npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

mkdir -p "$CACHE_DIR"
PASSED=0
START_ALL=$SECONDS
step() { STEP="$1"; STEP_START=$SECONDS; echo "==> [infra] $1"; }
ok() { PASSED=$((PASSED + 1)); echo "    ok: $STEP ($((SECONDS - STEP_START))s)"; }
fail() { echo "FAILED: [infra] $STEP: $*" >&2; echo "infra: $PASSED passed, 1 failed"; STEP=""; exit 1; }
trap 'rc=$?; if [ $rc -ne 0 ] && [ -n "${STEP:-}" ]; then echo "FAILED: [infra] $STEP (exit $rc)" >&2; echo "infra: $PASSED passed, 1 failed"; fi' EXIT

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then fail "missing $* and not root: install them (apt-get install $*)"; fi
  if [ -z "${APT_UPDATED:-}" ]; then DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---- tools ------------------------------------------------------------------------------
step "tools (node, graphviz, python venv)"
command -v node >/dev/null || apt_install nodejs
command -v npm >/dev/null || apt_install npm
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || fail "Node.js >= 20 is required (aws-cdk-lib), found $(node --version)"
command -v dot >/dev/null || apt_install graphviz
command -v python3 >/dev/null || apt_install python3 python3-venv
REQ_STAMP="$(cat "$HERE/requirements.txt" "$HERE/constraints.txt" | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.snakepay-stamp" 2>/dev/null)" != "$REQ_STAMP" ]; then
  echo "    creating $VENV (pinned cfn-lint, checkov, diagrams)"
  python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$HERE/requirements.txt" -c "$HERE/constraints.txt"
  echo "$REQ_STAMP" > "$VENV/.snakepay-stamp"
fi
echo "    node $(node --version), npm $(npm --version 2>/dev/null), $(dot -V 2>&1), cfn-lint $("$VENV/bin/cfn-lint" --version | cut -d' ' -f2), checkov $("$VENV/bin/checkov" --version)"
ok

cd "$HERE"

step "npm ci"
npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>"$CACHE_DIR/npm-ci.log" || { cat "$CACHE_DIR/npm-ci.log" >&2; fail "npm ci"; }
echo "    aws-cdk-lib $(node -p 'require("aws-cdk-lib/package.json").version'), aws-cdk (CLI) $(npx --no-install cdk --version 2>/dev/null | cut -d' ' -f1), cdk-nag $(node -p 'require("cdk-nag/package.json").version')"
ok

step "tsc"
rm -rf dist
npx --no-install tsc -p tsconfig.json
ok

step "cdk synth (all stacks, offline: cdk.context.json)"
rm -rf "$OUT"
# --lookups=false: any missing context value fails the synth instead of calling AWS.
npx --no-install cdk synth --quiet --lookups=false --no-notices --ci -o "$OUT" >"$CACHE_DIR/synth.log" 2>&1 || { cat "$CACHE_DIR/synth.log" >&2; fail "cdk synth"; }
templates=("$OUT"/*.template.json)
[ "${#templates[@]}" -ge 3 ] || fail "expected a global and at least two regional templates, got ${#templates[@]}"
echo "    ${#templates[@]} templates: $(cd "$OUT" && ls *.template.json | tr '\n' ' ')"
ok

step "unit tests (node:test + CDK assertions)"
node --test dist/test/ 2>&1 | tee "$CACHE_DIR/unit.log" | grep -E '^# (tests|pass|fail)|^not ok|^    not ok' || true
[ "${PIPESTATUS[0]}" -eq 0 ] || { cat "$CACHE_DIR/unit.log" >&2; fail "unit tests"; }
ok

step "cdk-nag (AwsSolutions + PCI DSS 3.2.1): no unsuppressed finding"
reports=("$OUT"/*NagReport.csv)
[ "${#reports[@]}" -ge 6 ] || fail "expected 2 nag reports per stack, got ${#reports[@]}"
# Columns: Rule ID, Resource ID, Compliance, Exception Reason, Rule Level, Rule Info.
# UNKNOWN means cdk-nag could not evaluate a rule (an unresolved token): treated as a failure.
bad="$(grep -hE '^"[^"]*","[^"]*","(Non-Compliant|UNKNOWN)"' "${reports[@]}" || true)"
if [ -n "$bad" ]; then echo "$bad" >&2; fail "$(echo "$bad" | wc -l) unsuppressed cdk-nag finding(s)"; fi
echo "    $(cat "${reports[@]}" | grep -c '","Compliant","') compliant, $(cat "${reports[@]}" | grep -c '","Suppressed","') suppressed with a reason"
ok

step "cfn-lint (every region's template)"
"$VENV/bin/cfn-lint" --non-zero-exit-code warning --format parseable "${templates[@]}" || fail "cfn-lint findings above"
ok

step "checkov (templates + Dockerfile)"
"$VENV/bin/checkov" -d "$OUT" --framework cloudformation --quiet --compact --skip-download --output cli >"$CACHE_DIR/checkov-cfn.log" 2>&1 \
  || { cat "$CACHE_DIR/checkov-cfn.log" >&2; fail "checkov (CloudFormation)"; }
grep -E '^(Passed|Failed) checks' "$CACHE_DIR/checkov-cfn.log" | sed 's/^/    cloudformation: /'
"$VENV/bin/checkov" -f "$ROOT/Dockerfile" --framework dockerfile --quiet --compact --skip-download --output cli >"$CACHE_DIR/checkov-docker.log" 2>&1 \
  || { cat "$CACHE_DIR/checkov-docker.log" >&2; fail "checkov (Dockerfile)"; }
grep -E '^(Passed|Failed) checks' "$CACHE_DIR/checkov-docker.log" | sed 's/^/    dockerfile: /'
ok

step "network diagram (docs/diagrams) + resource-kind coverage"
"$VENV/bin/python" "$HERE/diagram/network.py" "$OUT" "$ROOT/docs/diagrams" || fail "diagram"
ok

STEP=""
echo "==> [infra] all checks passed in $((SECONDS - START_ALL))s"
echo "infra: $PASSED passed, 0 failed"

#!/usr/bin/env bash
# Offline checks of deploy/observability; the project's test command runs
#   bash deploy/observability/check.sh
# Steps: promtool -> config -> rules -> rule unit tests -> a broken
# expectation must fail -> every alert tested and documented -> dashboard
# -> metric names (self-test, and every name in docs/metrics.md).
# Installs promtool (Debian package `prometheus`) when it is missing, without
# letting the package start its own Prometheus (scripts/lib/common.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"
HERE="$REPO_ROOT/deploy/observability"
cd "$HERE"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail() { printf '%sFAILED:%s [observability] %s\n' "$_red" "$_reset" "$*" >&2; exit 1; }

say "[observability] promtool"
ensure_prometheus
ok "$(promtool --version 2>&1 | head -n 1)"

say "[observability] promtool check config prometheus.yml"
promtool check config prometheus.yml >"$TMP/config.log" 2>&1 || { cat "$TMP/config.log" >&2; fail "check config"; }
ok "$(grep -c 'job_name:' prometheus.yml) scrape jobs, $(grep -o '[0-9]* rule files found' "$TMP/config.log")"

say "[observability] promtool check rules rules/*.yml"
promtool check rules rules/*.yml >"$TMP/rules.log" 2>&1 || { cat "$TMP/rules.log" >&2; fail "check rules"; }
# The rule count promtool reads must be the one metric_names.py reads: its
# small YAML reader then misses no rule, so no metric goes unlisted.
promtool_counts="$(awk '/^Checking /{f=$2; sub(".*/", "", f)} /rules found/{print f, $2}' "$TMP/rules.log")"
ours="$(python3 metric_names.py --rule-counts)"
[ "$promtool_counts" = "$ours" ] || fail "promtool and metric_names.py read different rules: $promtool_counts / $ours"
ok "$(awk '{n += $2} END {print n}' <<<"$ours") rules in $(wc -l <<<"$ours") files, metric_names.py reads them all"

say "[observability] promtool test rules tests/*.yml"
promtool test rules tests/*.yml >"$TMP/test.log" 2>&1 || { cat "$TMP/test.log" >&2; fail "test rules"; }
ok "$(grep -c '^Unit Testing:' "$TMP/test.log") test files, $(cat tests/*.yml | grep -c '^  - name:') test cases pass"

say "[observability] a broken expectation fails"
mkdir -p "$TMP/broken"
cp -r rules tests "$TMP/broken/"
sed -i 's/The usd trial balance is -500 minor units/The usd trial balance is -400 minor units/' "$TMP/broken/tests/payments.yml"
! cmp -s tests/payments.yml "$TMP/broken/tests/payments.yml" || fail "the deliberate break changed nothing"
if promtool test rules "$TMP/broken/tests/payments.yml" >"$TMP/broken.log" 2>&1; then
  fail "promtool test rules passed with a wrong expected annotation"
fi
grep -q 'FAILED' "$TMP/broken.log" || { cat "$TMP/broken.log" >&2; fail "promtool failed for another reason"; }
ok "promtool test rules fails on an expected -400 where the rule says -500"

say "[observability] every alert has a firing test, a quiet test and a runbook"
alerts="$(sed -n 's/^ *- alert: *//p' rules/*.yml | sort)"
for alert in $alerts; do
  grep -h -A2 "alertname: $alert\$" tests/*.yml | grep -q 'exp_labels:' || fail "$alert has no test where it fires"
  grep -h -A1 "alertname: $alert\$" tests/*.yml | grep -q 'exp_alerts: \[\]' || fail "$alert has no test where it stays quiet"
  grep -qx "### $alert" README.md || fail "$alert has no runbook section (### $alert) in README.md"
  grep -q "runbook: deploy/observability/README.md#${alert,,}\$" rules/*.yml || fail "$alert has no runbook annotation"
done
ok "$(wc -w <<<"$alerts") alerts"

say "[observability] Grafana dashboard"
python3 grafana/payments.py --check || fail "grafana/payments.json is stale"
python3 metric_names.py --dashboard-rules "$TMP/dashboard.yml" grafana/payments.json
promtool check rules "$TMP/dashboard.yml" >"$TMP/dashboard.log" 2>&1 || { cat "$TMP/dashboard.log" >&2; fail "a dashboard query does not parse"; }
ok "grafana/payments.json is current; its $(grep -o '[0-9]* rules found' "$TMP/dashboard.log" | cut -d' ' -f1) queries parse"

say "[observability] metric names"
PYTHONDONTWRITEBYTECODE=1 python3 metric_names.py --self-test 2>"$TMP/self-test.log" || { cat "$TMP/self-test.log" >&2; fail "metric_names.py --self-test"; }
names="$(python3 metric_names.py --contract)" || fail "a metric the rules or the dashboard read is not in docs/metrics.md"
ok "$(grep -o 'Ran [0-9]* tests' "$TMP/self-test.log"); $(wc -l <<<"$names") metrics read, all in docs/metrics.md"

say "[observability] all checks passed"

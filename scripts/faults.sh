#!/usr/bin/env bash
# The long fault-injection run (docs/reliability.md §2): the platform under
# load while each fault is injected in turn, with longer outages and more
# clients than the short version that runs with the tests. Prints the table
# of faults, load, payments, violations and time to recover.
#
#   scripts/faults.sh [--seed N]     # seed: which cards and backoffs (default 1)
#
# It does not use the shared PostgreSQL, Redis or RabbitMQ: the run owns its
# dependencies (a PostgreSQL cluster, a Redis server and a RabbitMQ node of
# its own on free ports), so it is safe beside other tests and a running
# local stack. Takes about 10 minutes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO_ROOT"

seed=1
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) seed="${2:?--seed needs a number}"; shift 2 ;;
    --seed=*) seed="${1#--seed=}"; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 64 ;;
  esac
done
case "$seed" in ''|*[!0-9]*) echo "--seed takes a number" >&2; exit 64 ;; esac

say "long fault run, seed $seed"
# The suite starts the services' binaries: build them with the test.
cargo build --locked -p snakepay-integration -p snakepay-external-api -p snakepay-processor-sim --bins
SNAKEPAY_FAULTS_SEED="$seed" cargo test --locked -p snakepay-integration --test faults \
  -- --ignored --exact every_payment_survives_each_fault_long --nocapture

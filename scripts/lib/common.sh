# Shared helpers for the project's scripts. Sourced, not run.
#
# Everything the local stack needs is named here once: where the dependencies
# listen, the database role, the region's databases.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export REPO_ROOT

# Where the dependencies listen. Overridable for a machine that runs its own
# copies elsewhere; the defaults are the packages' defaults.
PG_HOST="${SNAKEPAY_PG_HOST:-127.0.0.1}"
PG_PORT="${SNAKEPAY_PG_PORT:-5432}"
REDIS_PORT="${SNAKEPAY_REDIS_PORT:-6379}"
AMQP_PORT="${SNAKEPAY_AMQP_PORT:-5672}"

# The database role that owns the schema (migrations, the admin CLI). A
# development-only password: production credentials come from Secrets
# Manager (deploy/aws).
DB_ROLE="snakepay"
DB_PASSWORD="snakepay"
# The services' own roles (crates/store migrations grant them their tables;
# each service's config section names its role as database_user). They share
# the development password locally.
DB_SERVICE_ROLES=(snakepay_external_api snakepay_internal_api snakepay_integration)

# The local region: one control database and two shards, so sharding is
# always exercised. Tests get their own databases (prefix snakepay_test).
LOCAL_REGION="local"
SHARD_COUNT=2
RABBITMQ_VHOST="snakepay"
# The tests' own vhost: scripts/test.sh recreates it before every run, so
# queues a crashed test left behind never pile up (quorum queues are heavy).
RABBITMQ_TEST_VHOST="snakepay_test"

# Minimum versions the platform is built and tested against.
MIN_POSTGRES_MAJOR=15
MIN_REDIS_MAJOR=7
MIN_RABBITMQ="3.10"

# Caches that outlive a clone (CI runs in fresh clones on the same machine).
CACHE_DIR="${SNAKEPAY_CACHE_DIR:-$HOME/.cache/snakepay}"

if [ -t 1 ]; then
  _bold=$'\e[1m' _green=$'\e[32m' _red=$'\e[31m' _yellow=$'\e[33m' _reset=$'\e[0m'
else
  _bold="" _green="" _red="" _yellow="" _reset=""
fi

say()  { printf '%s==>%s %s\n' "$_bold" "$_reset" "$*"; }
ok()   { printf '  %s✓%s %s\n' "$_green" "$_reset" "$*"; }
note() { printf '  %s•%s %s\n' "$_yellow" "$_reset" "$*"; }
die()  { printf '%serror:%s %s\n' "$_red" "$_reset" "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if is_root; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "'$*' needs root and sudo is not available; run this script as root"
  fi
}

# Stops the given processes (SIGTERM, so they drain) and waits for them.
stop_processes() {
  if [ "$#" -gt 0 ]; then
    say "stopping $# service(s)"
    kill -TERM "$@" 2>/dev/null || true
    wait "$@" 2>/dev/null || true
  fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits up to $1 seconds for a command to succeed.
wait_for() {
  local seconds="$1"; shift
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

_apt_updated=""
# Installs Debian/Ubuntu packages, running `apt-get update` once per script.
apt_install() {
  command -v apt-get >/dev/null 2>&1 ||
    die "'$*' is missing and this is not a Debian/Ubuntu machine (no apt-get): install it yourself and re-run"
  if [ -z "$_apt_updated" ]; then
    note "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
      die "apt-get update failed: check the machine's package mirrors"
    _apt_updated=1
  fi
  note "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
    die "apt-get install $* failed"
}

# Installs Prometheus and promtool (Debian package `prometheus`) when missing.
# The package would start and enable its own system service on :9090, which
# is the local run's port (scripts/run.sh starts Prometheus with the repo's
# configuration): a temporary policy-rc.d keeps the service from starting
# during the install, and it is disabled at boot. A Prometheus that was
# already installed is left as it is.
ensure_prometheus() {
  if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    return 0
  fi
  local policy=/usr/sbin/policy-rc.d
  if [ -e "$policy" ]; then
    apt_install prometheus
  else
    printf '#!/bin/sh\n# snakepay: no service starts while prometheus installs\nexit 101\n' |
      as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    # A subshell, so the policy goes away even when apt_install dies.
    (trap 'as_root rm -f "$policy"' EXIT; apt_install prometheus)
  fi
  if [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif command -v update-rc.d >/dev/null 2>&1; then
    as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
  command -v promtool >/dev/null 2>&1 || die "the prometheus package installed no promtool"
  ok "installed $(prometheus --version 2>&1 | head -n 1)"
}

# Installs a cargo subcommand at a pinned version when it is missing or differs.
ensure_cargo_tool() {
  local binary="$1" crate="$2" version="$3"
  if "$binary" --version 2>/dev/null | grep -q " $version"; then
    return 0
  fi
  note "installing $crate $version (cargo install; a few minutes, once per machine)"
  cargo install --locked --quiet "$crate@$version" || die "cargo install $crate@$version failed"
}

#!/usr/bin/env bash
# Brings up the platform's dependencies on this machine, idempotently:
# installs PostgreSQL, Redis and RabbitMQ where missing (apt-get), starts them
# where they are down, and creates the role, databases and vhost the platform
# and its tests use. Says what it did; fails with a clear message when it
# cannot. Used by scripts/run.sh and scripts/test.sh; safe to run by hand.
#
#   scripts/stack.sh          bring everything up
#   scripts/stack.sh status   report, change nothing
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# ---------------------------------------------------------------- PostgreSQL

# The newest installed server major version, or nothing.
pg_installed_version() {
  ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1
}

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; }

# psql as the database superuser. Works with trust auth over TCP (CI
# machines) and with Debian's default peer auth for the postgres OS user.
pg_super() {
  if psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
    psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"
  elif is_root; then
    runuser -u postgres -- psql -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 -qtA "$@"
  else
    sudo -u postgres psql -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 -qtA "$@"
  fi
}

ensure_postgres() {
  say "PostgreSQL (>= $MIN_POSTGRES_MAJOR) on $PG_HOST:$PG_PORT"
  local version
  version="$(pg_installed_version)"
  if [ -z "$version" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
    version="$(pg_installed_version)"
    [ -n "$version" ] || die "PostgreSQL did not install"
    ok "installed PostgreSQL $version"
  fi
  [ "$version" -ge "$MIN_POSTGRES_MAJOR" ] ||
    die "PostgreSQL $version is installed but >= $MIN_POSTGRES_MAJOR is required (add the PGDG apt repository and install postgresql-$MIN_POSTGRES_MAJOR)"

  if pg_ready; then
    ok "running"
  else
    if ! pg_lsclusters -h 2>/dev/null | awk '{print $1, $2}' | grep -qx "$version main"; then
      note "creating cluster $version/main"
      as_root pg_createcluster "$version" main >/dev/null || die "pg_createcluster $version main failed"
    fi
    note "starting cluster $version/main"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
      die "PostgreSQL $version/main did not start: see /var/log/postgresql/postgresql-$version-main.log"
    wait_for 30 pg_ready || die "PostgreSQL started but does not accept connections on $PG_HOST:$PG_PORT"
    ok "started"
  fi
  local server_major
  server_major="$(pg_super -c 'show server_version_num' | cut -c1-2)"
  [ "$server_major" -ge "$MIN_POSTGRES_MAJOR" ] ||
    die "the server on port $PG_PORT is PostgreSQL $server_major; >= $MIN_POSTGRES_MAJOR is required"
}

ensure_databases() {
  say "PostgreSQL role and databases"
  # CREATEDB: the test suite creates a fresh database per test.
  if [ "$(pg_super -c "select 1 from pg_roles where rolname = '$DB_ROLE'")" = 1 ]; then
    ok "role $DB_ROLE exists"
  else
    pg_super -c "create role $DB_ROLE login createdb password '$DB_PASSWORD'"
    ok "created role $DB_ROLE"
  fi
  # One login role per service (least privilege, docs/security.md 7.2). The
  # migrations grant them their tables and would create them too, but the
  # application role may not create roles; here they get the development
  # password, so the local run works under password authentication as well.
  local service
  for service in "${DB_SERVICE_ROLES[@]}"; do
    if [ "$(pg_super -c "select 1 from pg_roles where rolname = '$service'")" = 1 ]; then
      ok "role $service exists"
    else
      pg_super -c "create role $service login password '$DB_PASSWORD'"
      ok "created role $service"
    fi
    # The owner may end a service's sessions (tests drop their databases
    # WITH (FORCE) while services are still connected).
    pg_super -c "grant $service to $DB_ROLE" >/dev/null 2>&1 || true
  done
  local names=() prefix
  for prefix in "snakepay_${LOCAL_REGION}" "snakepay_test"; do
    names+=("${prefix}_control")
    for ((shard = 0; shard < SHARD_COUNT; shard++)); do names+=("${prefix}_shard_${shard}"); done
  done
  local created=() name
  for name in "${names[@]}"; do
    if [ "$(pg_super -c "select 1 from pg_database where datname = '$name'")" != 1 ]; then
      pg_super -c "create database $name owner $DB_ROLE"
      created+=("$name")
    fi
  done
  if [ "${#created[@]}" -gt 0 ]; then ok "created ${created[*]}"; fi
  ok "databases: ${names[*]}"
  # Prove the application can log in with its own credentials over TCP.
  PGPASSWORD="$DB_PASSWORD" psql -h "$PG_HOST" -p "$PG_PORT" -U "$DB_ROLE" -d "snakepay_${LOCAL_REGION}_control" -tAc 'select 1' >/dev/null ||
    die "role $DB_ROLE cannot log in over TCP: check pg_hba.conf allows password (scram-sha-256) or trust auth for $PG_HOST"
  ok "role $DB_ROLE can log in over TCP"
}

# --------------------------------------------------------------------- Redis

redis_ready() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

ensure_redis() {
  say "Redis (>= $MIN_REDIS_MAJOR) on 127.0.0.1:$REDIS_PORT"
  if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
    ok "installed $(redis-server --version | awk '{print $3}')"
  fi
  local major
  major="$(redis-server --version | sed -E 's/.* v=([0-9]+)\..*/\1/')"
  [ "$major" -ge "$MIN_REDIS_MAJOR" ] || die "Redis $major is installed but >= $MIN_REDIS_MAJOR is required"
  if redis_ready; then
    ok "running"
    return
  fi
  # Redis is a cache here: nothing needs to survive a restart, so no
  # persistence (DESIGN.md: Redis down means slower, not broken).
  local dir logfile
  if is_root; then
    dir=/var/lib/redis logfile=/var/log/redis/snakepay.log
    mkdir -p "$dir" /var/log/redis
  else
    dir="$CACHE_DIR/redis" logfile="$CACHE_DIR/redis/redis.log"
    mkdir -p "$dir"
  fi
  note "starting redis-server"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$dir" --logfile "$logfile" >/dev/null || die "redis-server did not start: see $logfile"
  wait_for 15 redis_ready || die "redis-server started but does not answer PING: see $logfile"
  ok "started"
}

# ------------------------------------------------------------------ RabbitMQ

rabbitmq_ready() { port_open "$AMQP_PORT"; }

ensure_rabbitmq() {
  say "RabbitMQ (>= $MIN_RABBITMQ) on 127.0.0.1:$AMQP_PORT"
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    apt_install rabbitmq-server
    ok "installed"
  fi
  if command -v dpkg-query >/dev/null 2>&1; then
    local version
    version="$(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')"
    if [ -n "$version" ] && [ "$(printf '%s\n%s\n' "$MIN_RABBITMQ" "$version" | sort -V | head -n 1)" != "$MIN_RABBITMQ" ]; then
      die "RabbitMQ $version is installed but >= $MIN_RABBITMQ is required (quorum queues with delivery limits)"
    fi
  fi
  if rabbitmq_ready; then
    ok "running"
  else
    note "starting rabbitmq-server (takes a few seconds)"
    as_root rabbitmq-server -detached >/dev/null 2>&1 || die "rabbitmq-server -detached failed: see /var/log/rabbitmq/"
    wait_for 90 rabbitmq_ready || die "RabbitMQ did not open port $AMQP_PORT within 90 s: see /var/log/rabbitmq/"
    ok "started"
  fi
  local vhost
  for vhost in "$RABBITMQ_VHOST" "$RABBITMQ_TEST_VHOST"; do
    if as_root rabbitmqctl -q list_vhosts 2>/dev/null | grep -qx "$vhost"; then
      ok "vhost $vhost exists"
    else
      as_root rabbitmqctl -q add_vhost "$vhost" >/dev/null || die "cannot create RabbitMQ vhost $vhost"
      ok "created vhost $vhost"
    fi
    as_root rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null ||
      die "cannot grant guest access to vhost $vhost"
  done
}

status() {
  local state
  for check in pg_ready redis_ready rabbitmq_ready; do
    if "$check"; then state="up"; else state="DOWN"; fi
    printf '%-16s %s\n' "${check%_ready}" "$state"
  done
}

case "${1:-up}" in
  up)
    command -v psql >/dev/null 2>&1 || apt_install postgresql-client
    command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
    ensure_postgres
    ensure_databases
    ensure_redis
    ensure_rabbitmq
    say "dependencies are up"
    ;;
  status) status ;;
  *) die "usage: scripts/stack.sh [up|status]" ;;
esac

#!/usr/bin/env bash
# Runs `cargo deny check` (advisories, bans, licenses, sources) with no network
# access, against the advisory database snapshot in ../shared/advisory-db (or
# $SNAKEPAY_ADVISORY_DB).
#
# cargo-deny reads an offline database from `<db-path>/advisory-db-<hash of
# its URL>` and wants it to be a git repository (it reads HEAD's date to judge
# staleness). So we copy the snapshot into a temporary git repository under
# that name and point a temporary copy of deny.toml at it. The directory name
# belongs to the default URL and the pinned cargo-deny version (see test.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ADVISORY_DB="${SNAKEPAY_ADVISORY_DB:-$REPO_ROOT/../shared/advisory-db}"
DB_DIR_NAME="advisory-db-3157b0e258782691"

[ -d "$ADVISORY_DB/crates" ] ||
  die "no advisory database at $ADVISORY_DB: set SNAKEPAY_ADVISORY_DB to a copy of github.com/rustsec/advisory-db"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/dbs"
cp -r "$ADVISORY_DB" "$work/dbs/$DB_DIR_NAME"
(
  cd "$work/dbs/$DB_DIR_NAME"
  rm -rf .git
  git init -q
  git add -A
  git -c user.name=snakepay -c user.email=snakepay@localhost commit -qm "advisory-db snapshot"
)
sed -e "s|^db-urls = .*|&\ndb-path = \"$work/dbs\"|" "$REPO_ROOT/deny.toml" >"$work/deny.toml"
grep -q "^db-path = \"$work/dbs\"" "$work/deny.toml" || die "could not point deny.toml at the local advisory database"

cd "$REPO_ROOT"
# --offline also keeps `cargo metadata` off the network, so every crate for
# every platform must already be in the local registry cache.
cargo fetch --locked --quiet
cargo deny --offline --config "$work/deny.toml" check

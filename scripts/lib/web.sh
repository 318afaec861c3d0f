# The web front's tools and build (web/), for run.sh and test.sh. Sourced
# after common.sh.

# Where the browser tests find Chromium: Debian's package, never a browser
# downloaded by a test tool.
CHROMIUM="${SNAKEPAY_CHROMIUM:-/usr/bin/chromium}"

# npm without its chatter or calls beyond the registry.
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

# Node.js and npm from the distribution when missing.
ensure_node() {
  command -v node >/dev/null 2>&1 || apt_install nodejs
  command -v npm >/dev/null 2>&1 || apt_install npm
}

# Chromium and a font to render text with.
ensure_chromium() {
  [ -x "$CHROMIUM" ] || apt_install chromium fonts-dejavu-core
}

# `npm ci` in web/ when node_modules is missing or older than the lock file
# (npm keeps its own copy of the lock in node_modules/.package-lock.json).
web_deps() {
  local installed="$REPO_ROOT/web/node_modules/.package-lock.json"
  if [ ! -f "$installed" ] || [ "$REPO_ROOT/web/package-lock.json" -nt "$installed" ]; then
    note "npm ci (web/)"
    (cd "$REPO_ROOT/web" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
      die "npm ci failed in web/"
  fi
}

# TypeScript to content-hashed, precompressed assets in web/dist.
web_build() {
  (cd "$REPO_ROOT/web" && node build.mjs)
}

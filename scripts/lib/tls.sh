# TLS for the local run (PCI DSS 4.2.1). Sourced by scripts/run.sh.
#
# - local_pki DIR SERVICE...: a certificate authority of this machine's own
#   (DIR/ca.pem, created once) and one certificate per service
#   (DIR/SERVICE.crt, DIR/SERVICE.key) for localhost and 127.0.0.1, made with
#   the openssl CLI. The keys never leave DIR (.stack/tls, never committed).
# - tls_config SOURCE DEST DIR: the configuration SOURCE with every local
#   URL on https, every listener serving TLS with its service's certificate,
#   and `[tls] ca_path` (what outbound calls trust besides the public roots).
# - tls_prometheus_config SOURCE DEST CA: deploy/observability/prometheus.yml
#   scraping the services' admin ports over https, verified against CA.

# Certificates expire; a new one is made when less than this is left.
TLS_RENEW_SECONDS=$((30 * 24 * 3600))
TLS_CA_DAYS=3650
# Browsers refuse server certificates valid for more than 398 days.
TLS_CERT_DAYS=397

local_pki() {
  local dir="$1"; shift
  command -v openssl >/dev/null || die "openssl is needed for the local certificates"
  mkdir -p "$dir"
  chmod 700 "$dir"
  if [ ! -s "$dir/ca.pem" ] || ! openssl x509 -checkend "$TLS_RENEW_SECONDS" -noout -in "$dir/ca.pem" >/dev/null; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -keyout "$dir/ca.key" -out "$dir/ca.pem" -days "$TLS_CA_DAYS" \
      -subj "/CN=Snakepay local CA ($(hostname))" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null || die "cannot create the local CA"
    chmod 600 "$dir/ca.key"
    # Certificates of an older CA would no longer verify.
    rm -f "$dir"/*.crt
  fi
  local service
  for service in "$@"; do
    if [ -s "$dir/$service.crt" ] && openssl x509 -checkend "$TLS_RENEW_SECONDS" -noout -in "$dir/$service.crt" >/dev/null; then
      continue
    fi
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -keyout "$dir/$service.key" -out "$dir/$service.csr" -subj "/CN=$service" 2>/dev/null ||
      die "cannot create a key for $service"
    chmod 600 "$dir/$service.key"
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "extendedKeyUsage=serverAuth" \
      "keyUsage=critical,digitalSignature" "basicConstraints=critical,CA:FALSE" >"$dir/$service.ext"
    openssl x509 -req -in "$dir/$service.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
      -days "$TLS_CERT_DAYS" -extfile "$dir/$service.ext" -out "$dir/$service.crt" 2>/dev/null ||
      die "cannot sign the certificate of $service"
    rm -f "$dir/$service.csr" "$dir/$service.ext"
  done
}

# SOURCE with https everywhere and the listeners' [<section>.tls] tables.
# Sections are "<config section>=<certificate name>" pairs after DIR.
tls_config() {
  local source="$1" dest="$2" dir="$3"; shift 3
  python3 - "$source" "$dest" "$dir" "$@" <<'PY'
import re, sys, tomllib
source, dest, pki, *sections = sys.argv[1:]
text = open(source, encoding="utf-8").read()
config = tomllib.loads(text)
if "tls" in config:
    sys.exit(f"{source} already has a [tls] section; run with SNAKEPAY_TLS=0 to use it as it is")
# Every service here listens on this machine: its URLs become https.
text = re.sub(r"http://(127\.0\.0\.1|localhost)([:/\"])", r"https://\1\2", text)
lines = ["", "# Added by scripts/run.sh (scripts/lib/tls.sh): TLS on every listener,",
         "# and the local CA trusted by every outbound call.", "[tls]", f'ca_path = "{pki}/ca.pem"']
for pair in sections:
    section, name = pair.split("=", 1)
    if section not in config:
        continue
    lines += ["", f"[{section}.tls]", f'cert_chain_path = "{pki}/{name}.crt"',
              f'private_key_path = "{pki}/{name}.key"']
open(dest, "w", encoding="utf-8").write(text + "\n".join(lines) + "\n")
PY
}

# prometheus.yml with https and the CA on every job but Prometheus itself,
# and its rule files named by absolute path (DEST lives elsewhere).
tls_prometheus_config() {
  local source="$1" dest="$2" ca="$3"
  python3 - "$source" "$dest" "$ca" <<'PY'
import os, re, sys
source, dest, ca = sys.argv[1:]
here = os.path.dirname(os.path.abspath(source))
out = []
for line in open(source, encoding="utf-8"):
    line = re.sub(r"^(\s*- )(rules/)", lambda m: m.group(1) + os.path.join(here, m.group(2)), line)
    out.append(line)
    match = re.match(r"^(\s*)- job_name: (snakepay-\S+)", line)
    if match:
        indent = match.group(1) + "  "
        out += [f"{indent}scheme: https\n", f"{indent}tls_config:\n",
                f"{indent}  ca_file: {ca}\n", f"{indent}  min_version: TLS12\n"]
open(dest, "w", encoding="utf-8").write("".join(out))
PY
}

#!/usr/bin/env bash
# Installs the Debian packages pgshard builds and tests with. A no-op when all are present;
# runs `apt-get update` only when something is missing.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libuv1-dev libssl-dev libpq-dev libinih-dev
      libpg-query-dev libprotobuf-c-dev libcmocka-dev postgresql-15 postgresql-client-15
      postgresql-contrib-15 python3 procps iproute2 openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# Installs the Debian packages pgshard builds and tests with. A no-op when all are present;
# runs `apt-get update` only when something is missing.
#
# The driver tests (tests/integration/t_driver_*) need psycopg 3, pgjdbc with a JDK, and
# Node.js with npm. A package whose program is already on PATH from elsewhere counts as
# present: Node.js from another distribution ships its own npm and conflicts with Debian's
# npm package (installing it would replace that Node.js), and any JDK will do for javac.
# The fault tests (tests/integration/t_faults.py) cut links with nftables rules inside
# network namespaces of their own.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libuv1-dev libssl-dev libpq-dev libinih-dev
      libpg-query-dev libprotobuf-c-dev libcmocka-dev postgresql-15 postgresql-client-15
      python3 python3-yaml procps iproute2 nftables openssl curl clang libclang-rt-14-dev clang-tidy cppcheck
      python3-psycopg libpostgresql-jdbc-java default-jdk-headless nodejs npm)
declare -A program=([nodejs]=node [npm]=npm [default-jdk-headless]=javac)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" && continue
  [[ -n ${program[$p]:-} ]] && command -v "${program[$p]}" >/dev/null 2>&1 && continue
  missing+=("$p")
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

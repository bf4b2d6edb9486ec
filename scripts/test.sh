#!/usr/bin/env bash
# Installs what the tests need (the package with its test extras, redis-server, postgresql,
# prometheus, openssl) and runs the suite.
# The tests start their own Redis and PostgreSQL servers on free loopback ports; nothing else has
# to be running.
set -euo pipefail
cd "$(dirname "$0")/.."
# Real servers the tests start on free loopback ports: Redis, PostgreSQL, and Prometheus for the scrape test;
# openssl makes the TLS tests' certificate.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# PostgreSQL for the usage record store: the tests make throwaway clusters with its initdb.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -m pip install -q -e '.[test]'
exec python3 -m pytest "$@"

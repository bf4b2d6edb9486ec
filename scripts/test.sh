#!/usr/bin/env bash
# Installs what the tests need (the package with its test extras, redis-server, postgresql,
# prometheus, openssl, tinyproxy, Debian's chromium for the console's browser tests, axe-core
# from npm for their accessibility checks) and runs the suite.
# The tests start their own Redis and PostgreSQL servers on free loopback ports; nothing else has
# to be running.
set -euo pipefail
cd "$(dirname "$0")/.."
python=python3
if ! $python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "scripts/test.sh: the gateway needs Python >= 3.11 (python3 is $($python -V 2>&1))" >&2
  exit 2
fi
# Real servers the tests start on free loopback ports: Redis, PostgreSQL, Prometheus for the
# scrape test, tinyproxy for the egress proxy tests; openssl makes the TLS tests' certificates.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# PostgreSQL for the usage record store: the tests make throwaway clusters with its initdb.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v tinyproxy >/dev/null 2>&1 || missing+=(tinyproxy)   # the egress proxy tests' proxy
# The console's browser tests drive Debian's chromium through Playwright (never a browser
# Playwright downloads), and load axe-core from npm.
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# A system Python that is externally managed (Debian, Ubuntu) refuses pip installs outside a
# virtualenv: use (or create) .venv then.
if $python -c 'import os, sys, sysconfig; sys.exit(not (sys.prefix == sys.base_prefix and os.path.exists(
        os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))'; then
  if [ ! -x .venv/bin/pip ]; then
    if ! $python -m venv .venv >/dev/null 2>&1; then
      # Debian and Ubuntu ship venv's pip bootstrap separately.
      rm -rf .venv
      sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
      $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
      $python -m venv .venv
    fi
  fi
  python=.venv/bin/python
fi
$python -m pip install -q -e '.[test]'
# Claude Code, for the headless tool-turn test (skipped without it); an offline machine skips it.
if ! command -v claude >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo npm install -g --silent @anthropic-ai/claude-code >/dev/null 2>&1 \
    || echo "scripts/test.sh: could not install Claude Code with npm; its test is skipped" >&2
fi
axe=tests/console/.npm/node_modules/axe-core/axe.min.js
if [ ! -f "$axe" ]; then
  npm install --silent --no-save --no-audit --no-fund --prefix tests/console/.npm axe-core@4.14.1 >/dev/null
fi
# The official OpenAI Node SDK, for the inbound chat completions test (skipped without it).
if [ ! -f tests/gateway/.npm/node_modules/openai/package.json ]; then
  npm install --silent --no-save --no-audit --no-fund --prefix tests/gateway/.npm openai@6.49.0 >/dev/null 2>&1 \
    || echo "scripts/test.sh: could not install the openai npm package; its test is skipped" >&2
fi
exec $python -m pytest "$@"

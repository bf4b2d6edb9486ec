#!/usr/bin/env bash
# Installs what the tests need (the package with its test extras, redis-server) and runs the suite.
# The tests start their own Redis servers on free loopback ports; nothing else has to be running.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null; fi
fi
python3 -m pip install -q -e '.[test]'
exec python3 -m pytest "$@"

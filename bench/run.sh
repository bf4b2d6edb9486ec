#!/usr/bin/env bash
# Measure what the gateway costs on this machine (see bench/bench.py for what and how).
# Installs the load generator and the fake upstream's server from Debian when missing:
#   wrk, nginx, libnginx-mod-http-echo (and taskset, from util-linux).
# Then runs bench/bench.py with the same arguments, e.g.
#   bench/run.sh --duration 5 --scenarios json-small-c1,sse-large-c64 --redis
# Set SKIP_INSTALL=1 to never call apt-get, PYTHON=... to choose the interpreter (default python3).
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_http_echo_module.so ] || need+=(libnginx-mod-http-echo)
command -v taskset >/dev/null || need+=(util-linux)
for arg in "$@"; do
  case "$arg" in --redis|--with-limits) command -v redis-server >/dev/null || need+=(redis-server) ;; esac
done
if [ "${#need[@]}" -gt 0 ] && [ "${SKIP_INSTALL:-0}" != 1 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "[bench] installing from Debian: ${need[*]}"
  $sudo apt-get update -q
  # (On a systemd machine Debian's nginx package also starts a system nginx on port 80; the
  # benchmark does not use it: it runs its own nginx on a free loopback port.)
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# bench.py stops everything it started on SIGINT/SIGTERM/SIGHUP; forward those to it and wait
# until it has finished cleaning up.
"${PYTHON:-python3}" "$BENCH/bench.py" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' INT TERM HUP
status=0
wait "$child" || status=$?
while kill -0 "$child" 2>/dev/null; do
  status=0
  wait "$child" || status=$?
done
exit "$status"

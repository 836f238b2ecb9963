#!/usr/bin/env bash
# Make sure a Redis answers at $REDIS_URL (default redis://localhost:6379/0).
# With SAFE_INSTALL_MISSING=1 (CI) and apt-get, installs Debian's redis-server when its binaries are missing.
# Uses it when it answers; else starts a redis-server from PATH (AOF on, state in var/redis);
# else, with SAFE_INSTALL_MISSING=1 and apt-get available, installs Debian's redis-server first;
# else explains how to get one. Prints "started <pid>" when it started one.
set -euo pipefail
PY=${PY:-.venv/bin/python}
URL=${REDIS_URL:-redis://localhost:6379/0}

ping() {
  "$PY" - "$URL" <<'PYEOF' >/dev/null 2>&1
import sys, redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()
PYEOF
}

install_redis() {
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null
}

# The tests that start Redis servers of their own (a cluster, a Sentinel group, a server to flush:
# tests/redis_servers.py) need redis-server and redis-cli on PATH even where a Redis already answers.
if [ "${SAFE_INSTALL_MISSING:-0}" = "1" ] && command -v apt-get >/dev/null 2>&1 \
   && ! { command -v redis-server && command -v redis-cli; } >/dev/null 2>&1; then
  echo "redis: no redis-server/redis-cli on PATH; installing Debian's redis-server"
  install_redis
fi

if ping; then echo "redis: answering at $URL"; exit 0; fi

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "${SAFE_INSTALL_MISSING:-0}" = "1" ] && command -v apt-get >/dev/null 2>&1; then
    echo "redis: none answers and no redis-server on PATH; installing Debian's redis-server"
    install_redis
  else
    cat >&2 <<MSG
redis: nothing answers at $URL and no redis-server is on PATH.
  Get one:   sudo apt-get install redis-server     (Debian/Ubuntu)
             brew install redis                    (macOS)
             docker run -p 6379:6379 redis:7       (anywhere with Docker)
  or point REDIS_URL at a Redis you have.
MSG
    exit 1
  fi
fi

hostport=${URL#*://}; hostport=${hostport#*@}; hostport=${hostport%%/*}
port=${hostport##*:}; [ "$port" = "$hostport" ] && port=6379
mkdir -p var/redis
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$(pwd)/var/redis" \
  --appendonly yes --appendfsync everysec --save "" \
  --logfile "$(pwd)/var/redis/redis.log" --pidfile "$(pwd)/var/redis/redis.pid"
for _ in $(seq 1 50); do ping && break; sleep 0.1; done
ping || { echo "redis: started but not answering; see var/redis/redis.log" >&2; exit 1; }
echo "started $(cat var/redis/redis.pid)"

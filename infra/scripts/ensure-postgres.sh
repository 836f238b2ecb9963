#!/usr/bin/env bash
# Make sure a PostgreSQL answers at $SAFE_TEST_PG_URL (default postgres:postgres@127.0.0.1:5432).
# Uses it when it answers; else starts the local cluster if one is installed; else, with
# SAFE_INSTALL_MISSING=1 and apt-get, installs Debian's postgresql and starts it. Exit 1 when none.
set -euo pipefail
PY=${PY:-.venv/bin/python}
URL=${SAFE_TEST_PG_URL:-postgresql://postgres:postgres@127.0.0.1:5432/postgres}

ping() {
  "$PY" - "$URL" <<'PYEOF' >/dev/null 2>&1
import asyncio, sys, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1], timeout=3)
    await conn.close()
asyncio.run(main())
PYEOF
}

if ping; then echo "postgres: answering"; exit 0; fi

start_cluster() {
  command -v pg_ctlcluster >/dev/null 2>&1 || return 1
  local ver
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$ver" ] || return 1
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start >/dev/null 2>&1 || true
  for _ in $(seq 1 50); do ping && return 0; sleep 0.2; done
  # a fresh Debian cluster asks for a password over TCP: give the postgres role the one we use
  su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null 2>&1 || true
  for _ in $(seq 1 20); do ping && return 0; sleep 0.2; done
  return 1
}

if start_cluster; then echo "postgres: started local cluster"; exit 0; fi
if [ "${SAFE_INSTALL_MISSING:-0}" = "1" ] && command -v apt-get >/dev/null 2>&1; then
  echo "postgres: installing Debian's postgresql"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null
  if start_cluster; then echo "postgres: started"; exit 0; fi
fi
echo "postgres: not available (PostgreSQL tests will be skipped)" >&2
exit 1

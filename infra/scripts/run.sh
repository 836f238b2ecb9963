#!/usr/bin/env bash
# `make run`: a Redis (found or started for this session), the four services, a live demo, Ctrl-C to stop.
set -euo pipefail
started=$(infra/scripts/ensure-redis.sh | tee /dev/stderr | sed -n 's/^started //p')
cleanup() {
  if [ -n "$started" ]; then echo "stopping the Redis started for this session"; kill "$started" 2>/dev/null || true; fi
}
trap cleanup EXIT
.venv/bin/safe-procurement up --demo "$@"

#!/usr/bin/env bash
# promtool (from Debian's `prometheus` package) checks infra/prometheus/*.yml in the tests. Present: nothing
# to do; else, with SAFE_INSTALL_MISSING=1 and apt-get available, installs it. Without it the tests fall
# back to a YAML check of the same files (tests/unit/test_monitoring_files.py).
set -euo pipefail
command -v promtool >/dev/null 2>&1 && exit 0
if [ "${SAFE_INSTALL_MISSING:-0}" = "1" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing promtool (Debian package prometheus) …"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null
  exit 0
fi
echo "promtool not found (sudo apt-get install prometheus); the alert rules get the YAML check only" >&2

#!/usr/bin/env bash
# Make sure `promtool` (Prometheus's rule checker) is on PATH, for the test that checks infra/prometheus/alerts.yml.
# Uses it when present; else, with SAFE_INSTALL_MISSING=1 and apt-get available, installs Debian's prometheus
# (which ships promtool). Without it the test checks the rules with its own parser only. Never fails the build.
set -uo pipefail
if command -v promtool >/dev/null 2>&1; then echo "promtool: $(command -v promtool)"; exit 0; fi
if [ "${SAFE_INSTALL_MISSING:-0}" = "1" ] && command -v apt-get >/dev/null 2>&1; then
  echo "promtool: not on PATH; installing Debian's prometheus (it ships promtool)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) \
    >/dev/null 2>&1 || echo "promtool: install failed; the alert rules are checked by the parser test only"
  # the package starts a Prometheus server as a service where it can; the tests need only the binary
  command -v promtool >/dev/null 2>&1 && echo "promtool: $(command -v promtool)"
else
  echo "promtool: not on PATH (SAFE_INSTALL_MISSING=1 installs it); the alert rules are checked by the parser test only"
fi
exit 0

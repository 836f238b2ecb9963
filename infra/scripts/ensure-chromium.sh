#!/usr/bin/env bash
# Make sure a Chromium is there for the console's browser tests (Playwright drives Debian's chromium:
# Playwright's own browser download is not used). Uses $CONSOLE_CHROMIUM or the chromium on PATH when
# present; else, with SAFE_INSTALL_MISSING=1 (as .ci/run sets) and apt-get, installs Debian's chromium.
# Exit 1 when none is available (the browser tests then skip, saying why).
set -uo pipefail
for bin in "${CONSOLE_CHROMIUM:-}" /usr/bin/chromium "$(command -v chromium 2>/dev/null)" "$(command -v chromium-browser 2>/dev/null)"; do
  if [ -n "$bin" ] && [ -x "$bin" ]; then echo "chromium: $bin"; exit 0; fi
done
if [ "${SAFE_INSTALL_MISSING:-0}" = "1" ] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium: installing Debian's chromium"
  SUDO=""
  [ "$(id -u)" = "0" ] || SUDO="sudo -n"
  if ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium) >/dev/null 2>&1 \
     && [ -x /usr/bin/chromium ]; then
    echo "chromium: /usr/bin/chromium"; exit 0
  fi
fi
echo "chromium: not available (the console's browser tests will be skipped)" >&2
exit 1

#!/usr/bin/env bash
# What would a dependency upgrade change? Compiles the newest versions pyproject.toml allows, prints each
# package whose pinned version would move, then (unless DEPS_CHECK_TESTS=0) installs them into a throwaway
# venv (var/deps-check) and runs the unit and subscriber layers there. The lock files are left untouched;
# `make lock` adopts the new versions. Meant for a scheduled job (e.g. weekly) as well as by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
UV=.venv/bin/uv
OUT=var/deps-check
mkdir -p "$OUT"
"$UV" pip compile pyproject.toml --extra dev --universal --python-version 3.11 --upgrade -q \
  --no-header --no-annotate -o "$OUT/upgraded.txt"
"$PY" - requirements-dev.lock "$OUT/upgraded.txt" <<'PYEOF'
import re, sys
def pins(path):
    out = {}
    for line in open(path):
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;\\]+)", line)
        if m:
            out[re.sub(r"\[.*\]", "", m.group(1)).lower()] = m.group(2)
    return out
old, new = pins(sys.argv[1]), pins(sys.argv[2])
moved = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
if not moved:
    print("deps-check: every pin is the newest version pyproject.toml allows")
for n in moved:
    print(f"deps-check: {n:32} {old.get(n, '(new)'):>14} -> {new.get(n, '(gone)')}")
PYEOF
if [ "${DEPS_CHECK_TESTS:-1}" = "0" ]; then exit 0; fi
python3 -m venv "$OUT/venv"
"$OUT/venv/bin/python" -m pip install -q -r "$OUT/upgraded.txt"
"$OUT/venv/bin/python" -m pip install -q --no-deps -e .
echo "deps-check: unit and subscriber layers on the upgraded versions"
"$OUT/venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit tests/messaging

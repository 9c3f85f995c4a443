#!/usr/bin/env bash
# Set up .venv with the pinned dependencies (and missing Debian packages). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# 1. Debian packages, only those missing.
missing=()
while read -r pkg; do
  pkg=${pkg%%#*}; pkg=${pkg// /}
  [ -z "$pkg" ] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < requirements/debian.txt
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. Python >= 3.11 and the venv.
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "setup: Python >= 3.11 is required (found $("$PYTHON" --version))" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

# 3. The project with exactly the pinned dependencies.
"$VENV/bin/python" -m pip install -q "pip==26.3"
"$VENV/bin/python" -m pip install -q -c requirements/constraints.txt -e ".[dev]"
# decord's only wheel carries a cp36 tag inside although it works on 3.11 (x86_64):
# pip check flags that one line; anything else is a real conflict.
problems=$("$VENV/bin/python" -m pip check 2>&1 | grep -v -e "^No broken requirements" \
  -e "^decord 0.6.0 is not supported on this platform" || true)
if [ -n "$problems" ]; then echo "setup: pip check failed:" >&2; echo "$problems" >&2; exit 1; fi
touch "$VENV/.installed"
echo "setup: $VENV ready"

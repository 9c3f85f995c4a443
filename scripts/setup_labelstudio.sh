#!/usr/bin/env bash
# Set up .venv-labelstudio: the Label Studio server 1.23.2 in its own venv, pinned by
# requirements/labelstudio.txt. Only tests/labelstudio.py (the round-trip tests) starts it;
# mmdata itself talks to any Label Studio server over its REST API. It cannot share .venv:
# label-studio 1.23.2 needs pyarrow<25 and (via label-studio-sdk) opencv-python-headless<4.13.
#
# Idempotent: a stamp holds the hash of the pins and of this script; when it matches, the
# script exits at once. Cold: ~1 GB installed, ~45 s with a warm pip cache (~3 min cold).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${LS_VENV:-.venv-labelstudio}
PYTHON=${PYTHON:-python3}
REQ=requirements/labelstudio.txt
STAMP="$VENV/.installed"
want=$(cat "$REQ" scripts/setup_labelstudio.sh | sha256sum | cut -d' ' -f1)

[ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && { echo "setup: $VENV up to date"; exit 0; }

mkdir -p "$VENV"
exec 9>"$VENV/.lock"
flock 9  # two test runs starting at once install once
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then echo "setup: $VENV up to date"; exit 0; fi

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "setup: Python >= 3.11 is required (found $("$PYTHON" --version))" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

start=$(date +%s)
log="$VENV/install.log"
# Pip's notes about local index folders that lack a package are noise: keep them in the log.
if ! { "$VENV/bin/python" -m pip install -q "pip==26.3" &&
       "$VENV/bin/python" -m pip install -q -c "$REQ" "label-studio==1.23.2"
     } >"$log" 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" "$log" >&2 || true
  echo "setup: installing Label Studio into $VENV failed (full log: $log)" >&2
  exit 1
fi
if ! "$VENV/bin/python" -m pip check >"$log.check" 2>&1; then
  cat "$log.check" >&2; echo "setup: pip check failed in $VENV" >&2; exit 1
fi
[ -x "$VENV/bin/label-studio" ] && "$VENV/bin/python" -c "import label_studio" >/dev/null 2>&1 || {
  echo "setup: label-studio installed but does not import in $VENV" >&2; exit 1; }
# A template data dir made by an older install would not match the new server's migrations.
rm -rf "$VENV/cache"
echo "$want" >"$STAMP"
echo "setup: $VENV ready in $(( $(date +%s) - start )) s"

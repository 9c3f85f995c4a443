#!/usr/bin/env bash
# Set up .venv-llamafactory: LLaMA-Factory 0.9.5 in its own venv, pinned by
# requirements/llamafactory.txt. Only tests/test_build_formats.py uses it, to load mmdata's
# LLaMA-Factory export with LLaMA-Factory's own data loader. It cannot share .venv
# (llamafactory pins datasets<=4.0, transformers<=5.6, peft<=0.18.1, accelerate<=1.11, av<=16).
#
# Idempotent: a stamp holds the hash of the pins and of this script; when it matches, the
# script exits at once. Cold: ~6.6 GB installed (torch with its CUDA libraries, which
# torchaudio needs even on CPU), ~70 s with a warm pip cache.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${LF_VENV:-.venv-llamafactory}
PYTHON=${PYTHON:-python3}
REQ=requirements/llamafactory.txt
STAMP="$VENV/.installed"
want=$(cat "$REQ" scripts/setup_llamafactory.sh | sha256sum | cut -d' ' -f1)

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
       "$VENV/bin/python" -m pip install -q -c "$REQ" "llamafactory==0.9.5" "torchcodec==0.17.0"
     } >"$log" 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" "$log" >&2 || true
  echo "setup: installing LLaMA-Factory into $VENV failed (full log: $log)" >&2
  exit 1
fi
if ! "$VENV/bin/python" -m pip check >"$log.check" 2>&1; then
  cat "$log.check" >&2; echo "setup: pip check failed in $VENV" >&2; exit 1
fi
"$VENV/bin/python" -c "import llamafactory.data.loader" >/dev/null 2>&1 || {
  echo "setup: llamafactory installed but does not import in $VENV" >&2; exit 1; }
echo "$want" >"$STAMP"
echo "setup: $VENV ready in $(( $(date +%s) - start )) s"

# Shared body of the side-venv set-up scripts (sourced, not run): installs PACKAGES into
# VENV pinned by REQ, checks it with `pip check` and CHECK (a shell command), then writes a
# stamp. The caller sets VENV, REQ, PACKAGES (array), CHECK and may define after_install.
#
# Idempotent: the stamp holds the hash of the pins, this file and the caller; when it
# matches, the caller exits at once. Two runs starting together install once (flock).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
STAMP="$VENV/.installed"
want=$(cat "$REQ" scripts/side_venv.sh "$0" | sha256sum | cut -d' ' -f1)

[ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && { echo "setup: $VENV up to date"; exit 0; }

mkdir -p "$VENV"
exec 9>"$VENV/.lock"
flock 9
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then echo "setup: $VENV up to date"; exit 0; fi

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "setup: Python >= 3.11 is required (found $("$PYTHON" --version))" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

start=$(date +%s)
log="$VENV/install.log"
# Pip's notes about local index folders that lack a package are noise: keep them in the log.
if ! { "$VENV/bin/python" -m pip install -q "pip==26.3" &&
       "$VENV/bin/python" -m pip install -q -c "$REQ" "${PACKAGES[@]}"
     } >"$log" 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" "$log" >&2 || true
  echo "setup: installing ${PACKAGES[*]} into $VENV failed (full log: $log)" >&2
  exit 1
fi
if ! "$VENV/bin/python" -m pip check >"$log.check" 2>&1; then
  cat "$log.check" >&2; echo "setup: pip check failed in $VENV" >&2; exit 1
fi
eval "$CHECK" >/dev/null 2>&1 || {
  echo "setup: ${PACKAGES[*]} installed but '$CHECK' fails in $VENV" >&2; exit 1; }
if declare -F after_install >/dev/null; then after_install; fi
echo "$want" >"$STAMP"
echo "setup: $VENV ready in $(( $(date +%s) - start )) s"

#!/usr/bin/env bash
# Set up .venv-labelstudio: the Label Studio server 1.23.2 in its own venv, pinned by
# requirements/labelstudio.txt. Only tests/labelstudio.py (the round-trip tests) starts it;
# mmdata itself talks to any Label Studio server over its REST API. It cannot share .venv:
# label-studio 1.23.2 needs pyarrow<25 and (via label-studio-sdk) opencv-python-headless<4.13.
# Idempotent (see scripts/side_venv.sh). Cold: ~1 GB, ~45 s with a warm pip cache.
VENV=${LS_VENV:-.venv-labelstudio}
REQ=requirements/labelstudio.txt
PACKAGES=("label-studio==1.23.2")
CHECK='[ -x "$VENV/bin/label-studio" ] && "$VENV/bin/python" -c "import label_studio"'
# A template data dir made by an older install would not match the new server's migrations.
after_install() { rm -rf "$VENV/cache"; }
source "$(dirname "$0")/side_venv.sh"

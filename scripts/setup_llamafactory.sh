#!/usr/bin/env bash
# Set up .venv-llamafactory: LLaMA-Factory 0.9.5 in its own venv, pinned by
# requirements/llamafactory.txt. Only tests/test_build_formats.py uses it, to load mmdata's
# LLaMA-Factory export with LLaMA-Factory's own data loader. It cannot share .venv
# (llamafactory pins datasets<=4.0, transformers<=5.6, peft<=0.18.1, accelerate<=1.11, av<=16).
# Idempotent (see scripts/side_venv.sh). Cold: ~6.6 GB (torch with its CUDA libraries, which
# torchaudio needs even on CPU), ~70 s with a warm pip cache.
VENV=${LF_VENV:-.venv-llamafactory}
REQ=requirements/llamafactory.txt
PACKAGES=("llamafactory==0.9.5" "torchcodec==0.17.0")
CHECK='"$VENV/bin/python" -c "import llamafactory.data.loader"'
source "$(dirname "$0")/side_venv.sh"

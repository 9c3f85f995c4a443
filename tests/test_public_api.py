"""The package's public API: every name in ``mmdata.__all__`` resolves, and importing
mmdata stays light (the stage functions load torch, Presidio and Ray only when used)."""

from __future__ import annotations

import subprocess
import sys

import mmdata


def test_every_public_name_resolves_including_the_lazy_stage_functions() -> None:
    for name in mmdata.__all__:
        assert getattr(mmdata, name) is not None, name
    assert mmdata.run_align.__module__ == "mmdata.align"
    assert set(mmdata.__all__) <= set(dir(mmdata))


def test_import_mmdata_does_not_load_torch_presidio_or_ray() -> None:
    code = ("import sys, mmdata; heavy = [m for m in ('torch', 'presidio_analyzer', 'ray', "
            "'spacy', 'transformers') if m in sys.modules]; print(','.join(heavy))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

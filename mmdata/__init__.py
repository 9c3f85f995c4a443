"""mmdata: raw factory logs → clean, time-aligned, anonymized multimodal datasets.

The stage functions (``run_ingest`` ... ``run_eval``, ``write_report``) are imported on
first use, so ``import mmdata`` does not load torch, Presidio or Ray.

>>> import mmdata
>>> mmdata.ms_to_ns(2)
2000000
>>> mmdata.run_align.__module__
'mmdata.align'
"""

from importlib import import_module
from typing import Any

from mmdata._version import __version__
from mmdata.config import PipelineConfig, config_hash, load_pipeline_config
from mmdata.errors import (
    ConfigError,
    ConfigFileError,
    ConnectorError,
    DependencyError,
    InputDataError,
    MmdataError,
    RunDirError,
    StageError,
    UsageError,
)
from mmdata.quarantine import QuarantineLog, QuarantineRow, read_quarantine
from mmdata.rundir import Manifest, RunDir, StageCounts
from mmdata.rundir_remote import open_run
from mmdata.runner import StageContext, StageOutcome, StageSpec, run_stage
from mmdata.synth import SynthConfig, SynthSummary, generate_factory
from mmdata.timebase import ClockModel, datetime_to_ns, ms_to_ns, ns_to_datetime, ns_to_iso
from mmdata.validate import validate_pipeline

#: stage functions, imported on first use (name -> module)
_LAZY = {
    "run_ingest": "mmdata.ingest",
    "run_sync": "mmdata.sync",
    "run_align": "mmdata.align",
    "run_scrub": "mmdata.scrub.stage",
    "run_build": "mmdata.build.stage",
    "run_features": "mmdata.features.stage",
    "run_train": "mmdata.train.stage",
    "run_eval": "mmdata.train.stage",
    "write_report": "mmdata.report.page",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mmdata' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ClockModel",
    "ConfigError",
    "ConfigFileError",
    "ConnectorError",
    "DependencyError",
    "InputDataError",
    "Manifest",
    "MmdataError",
    "PipelineConfig",
    "QuarantineLog",
    "QuarantineRow",
    "RunDir",
    "RunDirError",
    "StageContext",
    "StageCounts",
    "StageError",
    "StageOutcome",
    "StageSpec",
    "SynthConfig",
    "SynthSummary",
    "UsageError",
    "__version__",
    "config_hash",
    "datetime_to_ns",
    "generate_factory",
    "load_pipeline_config",
    "ms_to_ns",
    "ns_to_datetime",
    "ns_to_iso",
    "open_run",
    "read_quarantine",
    "run_align",
    "run_build",
    "run_eval",
    "run_features",
    "run_ingest",
    "run_scrub",
    "run_stage",
    "run_sync",
    "run_train",
    "validate_pipeline",
    "write_report",
]

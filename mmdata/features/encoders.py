"""Encoders: built-in descriptors and Hugging Face models, run in batches on CPU or GPU.

An :class:`Encoder` pairs a picklable *preprocessor* (runs in the loader's worker
processes, see :mod:`mmdata.features.loader`) with a batched tensor computation that runs
in the main process on ``device``. Its identity for the cache is
``encoder_key(id, revision, sha256(preprocessing))``: for built-ins the revision is the
algorithm's version, for Hugging Face models the sha256 of ``config.json`` and the
safetensors weights, so retrained weights at the same path invalidate the cache.

Built-ins (no weights):

* ``thumbnail`` (images): the picture at 16×16 (standardized), an 8×8 grid of gradient
  energy, an 8×8 grid of *line* energy (the morphological top-hats of a 3×3 window: what a
  grey-level opening and closing remove, i.e. thin bright or dark lines such as scratches,
  while straight edges stay), global intensity stats and a histogram.
* ``logmel`` (audio): torchaudio log-mel spectrogram; ``pooling: mean`` gives the mean and
  std of each mel band over time plus coarse band-energy ratios, ``none`` the
  ``[frames, n_mels]`` matrix.
* ``spectral`` (sensor windows): per channel, log energies in log-spaced bands up to
  Nyquist, mean, RMS, kurtosis, crest factor, spectral peak and centroid, high-band ratio,
  and envelope features (modulation depth, envelope-spectrum peak prominence and
  frequency) that reveal impact trains such as an outer-race bearing fault.

Hugging Face models: ``encoder`` is a local folder or a hub id (fetched by huggingface_hub;
with ``HF_HUB_OFFLINE=1`` only from its local cache), loaded with
``AutoModel.from_pretrained`` and its ``AutoImageProcessor`` / ``AutoFeatureExtractor``.
Only safetensors weights are loaded. Images: models with ``get_image_features`` (CLIP,
SigLIP) give their image embedding for ``pooling: mean|cls``; others give the last hidden
state's mean (``mean``), first token (``cls``) or all tokens (``none``). Audio
(Wav2Vec2-like, or the encoder of Whisper-like models) is resampled to the feature
extractor's rate with torchaudio and pooled the same way. On CUDA the model runs under
bf16 autocast (``precision="auto"``); features come back as float32 on the CPU. The
``thumbnail`` encoder ignores ``pooling``.

>>> enc = build_encoder(EncoderConfig(encoder="spectral"), "sensor", device="cpu")
>>> import numpy as np
>>> win = SensorWindow(np.random.default_rng(0).normal(size=(3, 2048)).astype("float32"), 5e3)
>>> enc.encode_items([win])[0].shape
torch.Size([78])
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError

from mmdata.config import EncoderConfig, config_hash
from mmdata.errors import ConfigError, DependencyError
from mmdata.features.cache import encoder_key
from mmdata.features.loader import (
    Batch,
    Decoded,
    HFAudioPre,
    HFImagePre,
    InlineItems,
    Item,
    Preprocessor,
    SensorPre,
    SensorWindow,
    ThumbnailPre,
    WavPre,
    _quiet_transformers,
    iterate_batches,
)

Modality = Literal["image", "audio", "sensor"]
Precision = Literal["auto", "fp32", "bf16"]
BUILTINS: dict[str, Modality] = {"thumbnail": "image", "logmel": "audio", "spectral": "sensor"}

__all__ = ["BUILTINS", "Encoder", "SensorWindow", "build_encoder", "resolve_device"]


def resolve_device(device: str, setting: str = "features.device") -> torch.device:
    """``auto`` → CUDA when available else CPU; ``cuda`` without CUDA is a DependencyError
    naming ``setting`` (the config field the device came from).

    >>> resolve_device("cpu").type
    'cpu'
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DependencyError(
            f"{setting} is 'cuda' but torch sees no CUDA device "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'})",
            hint="use --device cpu (or auto), or run on a machine with an NVIDIA GPU and driver",
        )
    if device not in ("cpu", "cuda"):
        raise ConfigError("features", "device", device, "one of 'auto', 'cpu', 'cuda'")
    return torch.device(device)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ThumbnailParams(_Params):
    """Preprocessing of ``thumbnail``."""

    size: int = 128
    grid: int = 16
    energy_grid: int = 8
    tophat: int = 3
    line_floor: float = 0.03
    hist_bins: int = 8


class LogMelParams(_Params):
    """Preprocessing of ``logmel``."""

    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float | None = None
    band_groups: int = 8


class SpectralParams(_Params):
    """Preprocessing of ``spectral`` (frequencies as fractions of Nyquist)."""

    bands: int = 16
    lowest_band: float = 1 / 256
    highpass: float = 0.1
    envelope_max_hz: float = 500.0


SPECTRAL_STATS = ("mean", "log_rms", "kurtosis", "crest", "peak", "centroid", "high_ratio",
                  "env_depth", "env_peak_ratio", "env_peak")  # fmt: skip


class Encoder(ABC):
    """A feature extractor for one modality; see the module docstring."""

    id: str
    modality: Modality
    revision: str
    pooling: str
    _key: str | None = None

    def __init__(self, device: torch.device, batch_size: int) -> None:
        self.device = device
        self.batch_size = batch_size
        self.precision = "fp32"

    @property
    @abstractmethod
    def preprocessor(self) -> Preprocessor:
        """The per-item decoding step (picklable; runs in loader workers)."""

    @abstractmethod
    def preprocessing(self) -> dict[str, Any]:
        """Everything besides weights that shapes the output (hashed into the key)."""

    @abstractmethod
    def _forward(self, inputs: Decoded) -> torch.Tensor:
        """Features ``[b, ...]`` of one stacked group, on ``self.device``."""

    @property
    def key(self) -> str:
        """The encoder key of the cache (id + revision + preprocessing hash)."""
        if self._key is None:
            self._key = encoder_key(self.id, self.revision, config_hash(self.preprocessing()))
        return self._key

    @property
    def dtype(self) -> str:
        """What the computation runs in, for the summary."""
        return "bfloat16-autocast" if self.precision == "bf16" else "float32"

    def encode_batch(self, batch: Batch) -> dict[int, torch.Tensor]:
        """Features (float32, CPU) of a batch's decoded items, by item position."""
        out: dict[int, torch.Tensor] = {}
        for positions, inputs in batch.groups:
            moved = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
            with (
                torch.inference_mode(),
                torch.autocast(
                    self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
                ),
            ):
                feats = self._forward(moved)
            feats = feats.float().cpu()
            for row, pos in enumerate(positions):
                out[pos] = feats[row]
        return out

    def encode_items(
        self, items: Sequence[Item], batch_size: int | None = None
    ) -> list[torch.Tensor]:
        """Features of in-memory items, in order (decoded in-process; errors raise)."""
        from mmdata.errors import InputDataError

        size = batch_size or self.batch_size
        out: dict[int, torch.Tensor] = {}
        for batch in iterate_batches(InlineItems(items), self.preprocessor, batch_size=size):
            if batch.errors:
                pos, err_class, message = batch.errors[0]
                raise InputDataError(f"item {pos}: {err_class}: {message}")
            out.update(self.encode_batch(batch))
        return [out[i] for i in range(len(items))]


# -- built-ins -------------------------------------------------------------------------
def _dilate(x: torch.Tensor, k: int, r: int) -> torch.Tensor:
    """Grey-level dilation of ``[b, 1, H, W]`` with a k×k square, separable, by shifted
    maxima (an order of magnitude faster than ``max_pool2d`` on one channel)."""
    h, w = x.shape[-2:]
    p = F.pad(x, (r, r, 0, 0), mode="replicate")
    rows = p[..., :, 0:w]
    for i in range(1, k):
        rows = torch.maximum(rows, p[..., :, i : i + w])
    p = F.pad(rows, (0, 0, r, r), mode="replicate")
    out = p[..., 0:h, :]
    for i in range(1, k):
        out = torch.maximum(out, p[..., i : i + h, :])
    return out


def _erode(x: torch.Tensor, k: int, r: int) -> torch.Tensor:
    return -_dilate(-x, k, r)


def _sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|∇x| of ``[b, 1, H, W]`` by the (separable) Sobel operator, replicate borders."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    vert = p[..., 0:h, :] + 2 * p[..., 1 : h + 1, :] + p[..., 2 : h + 2, :]
    horiz = p[..., :, 0:w] + 2 * p[..., :, 1 : w + 1] + p[..., :, 2 : w + 2]
    gx = (vert[..., :, 2 : w + 2] - vert[..., :, 0:w]) / 4
    gy = (horiz[..., 2 : h + 2, :] - horiz[..., 0:h, :]) / 4
    return (gx.square() + gy.square()).sqrt()


class _Builtin(Encoder):
    """A built-in encoder: fixed code (``revision``) + its params model."""

    params: Any

    def __init__(self, params: Any, pooling: str, device: torch.device, batch_size: int) -> None:
        super().__init__(device, batch_size)
        self.params, self.pooling = params, pooling

    def preprocessing(self) -> dict[str, Any]:
        """The params and the pooling."""
        return {**self.params.model_dump(), "pooling": self.pooling}


class ThumbnailEncoder(_Builtin):
    """The ``thumbnail`` image descriptor (fixed dim, no weights)."""

    id, modality, revision = "thumbnail", "image", "mmdata-thumbnail-2"

    params: ThumbnailParams

    @property
    def preprocessor(self) -> Preprocessor:
        """Grayscale resize to ``size``×``size``."""
        return ThumbnailPre(self.params.size)

    def preprocessing(self) -> dict[str, Any]:
        """The params."""
        return self.params.model_dump()

    @property
    def dim(self) -> int:
        """Output size."""
        p = self.params
        return 2 + p.grid**2 + 2 * p.energy_grid**2 + 3 + p.hist_bins

    def _forward(self, inputs: Decoded) -> torch.Tensor:
        p = self.params
        x = inputs["pixels"].float() / 255.0  # [b, 1, S, S]
        b = x.shape[0]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        thumb = F.adaptive_avg_pool2d((x - mean) / (std + 1e-3), p.grid)
        mag = _sobel_magnitude(x)
        k, r = p.tophat, p.tophat // 2
        closing = _erode(_dilate(x, k, r), k, r)
        opening = _dilate(_erode(x, k, r), k, r)
        # Thin lines, not straight edges; the soft threshold drops sensor noise and JPEG ringing.
        line = F.relu((closing - x) + (x - opening) - p.line_floor)
        bins = (x.view(b, -1) * p.hist_bins).long().clamp_(0, p.hist_bins - 1)
        hist = (
            torch.zeros(b, p.hist_bins, device=x.device).scatter_add_(
                1, bins, torch.ones_like(bins, dtype=torch.float32)
            )
            / bins.shape[1]
        )
        parts = [
            mean.view(b, 1), std.view(b, 1), thumb.reshape(b, -1),
            F.adaptive_avg_pool2d(mag, p.energy_grid).reshape(b, -1) * 4,
            F.adaptive_avg_pool2d(line, p.energy_grid).reshape(b, -1) * 8,
            mag.mean(dim=(1, 2, 3)).view(b, 1) * 4, line.mean(dim=(1, 2, 3)).view(b, 1) * 8,
            (line > 0.1).float().mean(dim=(1, 2, 3)).view(b, 1), hist,
        ]  # fmt: skip
        return torch.cat(parts, dim=1)


class LogMelEncoder(_Builtin):
    """The ``logmel`` audio descriptor."""

    id, modality, revision = "logmel", "audio", "mmdata-logmel-1"

    params: LogMelParams
    _mel: torch.nn.Module | None = None

    @property
    def preprocessor(self) -> Preprocessor:
        """Mono waveform at ``sample_rate``."""
        return WavPre(self.params.sample_rate, self.params.n_fft)

    def _forward(self, inputs: Decoded) -> torch.Tensor:
        import torchaudio  # type: ignore[import-untyped]

        p = self.params
        if self._mel is None:
            self._mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=p.sample_rate,
                n_fft=p.n_fft,
                hop_length=p.hop_length,
                n_mels=p.n_mels,
                f_min=p.f_min,
                f_max=p.f_max,
                power=2.0,
            ).to(self.device)
        power = self._mel(inputs["wave"].float())  # [b, n_mels, frames]
        logmel = 10.0 * torch.log10(power.clamp_min(1e-10))
        if self.pooling == "none":
            return logmel.transpose(1, 2)
        band = power.mean(dim=2)  # [b, n_mels]
        groups = band.reshape(band.shape[0], p.band_groups, -1).sum(dim=2)
        ratios = groups / groups.sum(dim=1, keepdim=True).clamp_min(1e-20)
        return torch.cat([logmel.mean(dim=2) / 10, logmel.std(dim=2) / 10, ratios], dim=1)


def spectral_features(x: torch.Tensor, rate: float, p: SpectralParams) -> torch.Tensor:
    """Per-channel features ``[b, C, bands + 10]`` of windows ``x`` ``[b, C, N]``.

    Columns: ``bands`` log10 band powers, then :data:`SPECTRAL_STATS` (``peak``,
    ``centroid`` and ``env_peak`` as fractions of Nyquist).

    >>> import math
    >>> t = torch.arange(5000) / 5000.0
    >>> f = spectral_features(torch.sin(2 * math.pi * 120 * t).view(1, 1, -1), 5000.0,
    ...                       SpectralParams())
    >>> round(float(f[0, 0, 16 + SPECTRAL_STATS.index("peak")]) * 2500)
    120
    """
    x = x.double()
    n = x.shape[-1]
    nyq = rate / 2
    mean = x.mean(dim=-1)
    xc = x - mean.unsqueeze(-1)
    rms = xc.pow(2).mean(dim=-1).sqrt()
    kurt = xc.pow(4).mean(dim=-1) / rms.pow(4).clamp_min(1e-24)
    crest = xc.abs().amax(dim=-1) / rms.clamp_min(1e-12)
    win = torch.hann_window(n, periodic=False, dtype=x.dtype, device=x.device)
    power = torch.fft.rfft(xc * win).abs().pow(2) * (2.0 / (n * win.pow(2).sum()))
    freqs = torch.fft.rfftfreq(n, 1.0 / rate, dtype=x.dtype, device=x.device)
    edges = [0.0, *(nyq * p.lowest_band ** (1 - i / (p.bands - 1)) for i in range(p.bands))]
    edges[-1] = nyq + 1.0  # the Nyquist bin belongs to the last band
    bands = torch.stack(
        [
            power[..., (freqs >= lo) & (freqs < hi)].sum(dim=-1)
            for lo, hi in itertools.pairwise(edges)
        ],
        dim=-1,
    )
    total = power[..., 1:].sum(dim=-1).clamp_min(1e-30)
    peak = freqs[1:][power[..., 1:].argmax(dim=-1)] / nyq
    centroid = (power * freqs).sum(dim=-1) / total / nyq
    high = power[..., freqs >= nyq / 4].sum(dim=-1) / total
    # Envelope of the high-passed signal (analytic signal by FFT): impacts ringing a
    # resonance show up as a deep, periodic envelope.
    spec = torch.fft.fft(xc)
    f_all = torch.fft.fftfreq(n, 1.0 / rate, dtype=x.dtype, device=x.device)
    gain = torch.where(f_all >= p.highpass * nyq, 2.0, 0.0).to(x.dtype)
    env = torch.fft.ifft(spec * gain).abs()
    env_mean = env.mean(dim=-1)
    depth = env.std(dim=-1) / env_mean.clamp_min(1e-12)
    env_power = torch.fft.rfft(env - env_mean.unsqueeze(-1)).abs().pow(2)
    in_range = (freqs >= 2.0) & (freqs <= min(p.envelope_max_hz, nyq / 2))
    if not bool(in_range.any()):
        in_range = freqs > 0
    ep = env_power[..., in_range]
    env_ratio = torch.log10(ep.amax(dim=-1).clamp_min(1e-30) / ep.mean(dim=-1).clamp_min(1e-30))
    env_peak = freqs[in_range][ep.argmax(dim=-1)] / nyq
    stats = [mean, torch.log10(rms.clamp_min(1e-12)), kurt, crest, peak, centroid, high, depth,
             env_ratio, env_peak]  # fmt: skip
    return torch.cat([torch.log10(bands.clamp_min(1e-12)), torch.stack(stats, dim=-1)], dim=-1)


class SpectralEncoder(_Builtin):
    """The ``spectral`` sensor descriptor: ``channels × (bands + 10)`` values."""

    id, modality, revision = "spectral", "sensor", "mmdata-spectral-1"

    params: SpectralParams

    @property
    def preprocessor(self) -> Preprocessor:
        """Checked float32 windows."""
        return SensorPre(16)

    def _forward(self, inputs: Decoded) -> torch.Tensor:
        rate = float(inputs["rate"][0])
        feats = spectral_features(inputs["values"], rate, self.params).float()
        return feats if self.pooling == "none" else feats.flatten(1)


# -- Hugging Face models ---------------------------------------------------------------
def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_model_dir(source: str, revision: str | None) -> Path:
    """A local folder, or a hub id resolved to its snapshot (cache only when offline)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                source,
                revision=revision,
                local_files_only=_hf_offline(),
                allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"],
            )
        )
    except Exception as err:  # huggingface_hub raises many kinds
        raise DependencyError(
            f"encoder {source!r} is not a built-in ({', '.join(BUILTINS)}), not a local "
            f"folder, and could not be resolved as a Hugging Face model: "
            f"{type(err).__name__}: {str(err)[:200]}",
            hint="give a local model folder, or unset HF_HUB_OFFLINE to allow a download"
            if _hf_offline()
            else "give a local model folder or a valid hub id",
        ) from err


def weights_revision(model_dir: Path) -> str:
    """sha256 over ``config.json`` and every ``*.safetensors`` file (names and bytes)."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise DependencyError(
            f"model folder {str(model_dir)!r} has no safetensors weights; mmdata never "
            "loads pickle checkpoints (*.bin, *.pt)",
            hint="re-save the model with save_pretrained(path) (safetensors is the default)",
        )
    h = hashlib.sha256()
    for f in [model_dir / "config.json", *files]:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


class HFEncoder(Encoder):
    """A Hugging Face vision or audio model."""

    def __init__(
        self,
        source: str,
        cfg: EncoderConfig,
        modality: Modality,
        device: torch.device,
        precision: Precision,
    ) -> None:
        super().__init__(device, cfg.batch_size)
        self.source, self.modality, self.pooling = source, modality, cfg.pooling
        self.model_dir = resolve_model_dir(source, cfg.revision)
        try:
            self.config = json.loads((self.model_dir / "config.json").read_text("utf-8"))
            proc = self.model_dir / "preprocessor_config.json"
            self.processor_config = json.loads(proc.read_text("utf-8")) if proc.exists() else {}
        except (OSError, ValueError) as err:
            raise DependencyError(
                f"model folder {str(self.model_dir)!r} is unusable: {err}",
                hint="save the model with save_pretrained",
            ) from err
        self.id = f"hf:{self.config.get('model_type', 'unknown')}"
        self.revision = weights_revision(self.model_dir)
        self.precision = (
            ("bf16" if device.type == "cuda" else "fp32") if precision == "auto" else precision
        )
        self.sample_rate = int(self.processor_config.get("sampling_rate", 16000))
        self._model: Any = None
        self._pre: Preprocessor | None = None

    @property
    def preprocessor(self) -> Preprocessor:
        """The model's image processor or feature extractor (loaded once per process)."""
        if self._pre is None:
            self._pre = (
                HFImagePre(str(self.model_dir))
                if self.modality == "image"
                else HFAudioPre(str(self.model_dir), self.sample_rate)
            )
        return self._pre

    def preprocessing(self) -> dict[str, Any]:
        """Processor config, pooling, precision and modality (weights are the revision)."""
        return {
            "processor": self.processor_config,
            "pooling": self.pooling,
            "precision": self.precision,
            "modality": self.modality,
            "jpeg_draft": "2x target" if self.modality == "image" else None,
        }

    @property
    def model(self) -> Any:
        """The model, loaded on first use (a warm run never loads it)."""
        if self._model is None:
            from transformers import AutoModel

            _quiet_transformers()
            model = AutoModel.from_pretrained(
                str(self.model_dir), dtype=torch.float32, use_safetensors=True
            )
            if getattr(model.config, "is_encoder_decoder", False):
                model = model.get_encoder()  # Whisper & co: the audio encoder only
            self._model = model.to(self.device).eval()
        return self._model

    def _forward(self, inputs: Decoded) -> torch.Tensor:
        model = self.model
        if self.modality == "image":
            if self.pooling != "none" and hasattr(model, "get_image_features"):
                out = model.get_image_features(pixel_values=inputs["pixel_values"])
                return out if isinstance(out, torch.Tensor) else out.pooler_output
            hidden = model(pixel_values=inputs["pixel_values"]).last_hidden_state
        else:
            hidden = model(**inputs).last_hidden_state
        if self.pooling == "mean":
            return hidden.mean(dim=1)
        if self.pooling == "cls":
            return hidden[:, 0]  # the first token (a pooler head may be untrained)
        return hidden


# -- factory ---------------------------------------------------------------------------
def _params(kind: type[_Params], options: dict[str, Any], where: str) -> Any:
    try:
        return kind.model_validate(options)
    except ValidationError as err:
        e = err.errors()[0]
        raise ConfigError(
            where,
            ".".join(str(p) for p in e["loc"]) or "options",
            e.get("input"),
            f"a valid {kind.__name__} field ({e['msg']})",
        ) from err


def build_encoder(
    cfg: EncoderConfig,
    modality: Modality,
    *,
    device: str | torch.device = "auto",
    precision: Precision = "auto",
    options: dict[str, Any] | None = None,
) -> Encoder:
    """The encoder ``cfg`` names, for ``modality``; ``options`` override a built-in's params.

    >>> enc = build_encoder(EncoderConfig(encoder="logmel"), "audio", device="cpu",
    ...                     options={"n_mels": 32})
    >>> enc.id, enc.preprocessing()["n_mels"], len(enc.key)
    ('logmel', 32, 64)
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    where = f"features.{modality}"
    opts = dict(options or getattr(cfg, "options", None) or {})
    builtin = BUILTINS.get(cfg.encoder)
    if builtin is None:
        if opts:
            raise ConfigError(where, "options", opts, "no options for a Hugging Face model")
        if modality == "sensor":
            raise ConfigError(where, "encoder", cfg.encoder, "'spectral' for sensors")
        return HFEncoder(cfg.encoder, cfg, modality, dev, precision)
    if builtin != modality:
        raise ConfigError(
            where,
            "encoder",
            cfg.encoder,
            f"an encoder for {modality}: "
            f"{next(k for k, v in BUILTINS.items() if v == modality)!r} or a "
            "Hugging Face model folder",
        )
    if cfg.pooling == "cls":
        raise ConfigError(where, "pooling", "cls", "'mean' or 'none' for a built-in encoder")
    if precision == "bf16":
        raise ConfigError(where, "precision", "bf16", "'fp32' for built-in encoders")
    enc: Encoder
    if cfg.encoder == "thumbnail":
        enc = ThumbnailEncoder(
            _params(ThumbnailParams, opts, where), cfg.pooling, dev, cfg.batch_size
        )
    elif cfg.encoder == "logmel":
        params = _params(LogMelParams, opts, where)
        if params.n_mels % params.band_groups:
            raise ConfigError(
                where, "n_mels", params.n_mels, f"a multiple of band_groups ({params.band_groups})"
            )
        enc = LogMelEncoder(params, cfg.pooling, dev, cfg.batch_size)
    else:
        enc = SpectralEncoder(
            _params(SpectralParams, opts, where), cfg.pooling, dev, cfg.batch_size
        )
    return enc

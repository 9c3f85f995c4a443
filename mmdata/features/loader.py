"""Decoding for the encoders: media and sensor windows → tensors, in worker processes.

The feature stage reads and decodes items in a torch :class:`~torch.utils.data.DataLoader`
whose workers (``features.loader_workers``; 0 = in-process) each build a whole
:class:`Batch` — read the bytes, check their sha256, decode, preprocess — while the main
process runs the encoder on the previous batch. Workers are forked from a ``forkserver``
(``spawn`` where there is none) — never from the main process, whose torch thread pools
do not survive ``fork`` — and run one torch thread each; the server imports torch and the
mmdata modules once, so a loader's workers start in milliseconds after the first.

What a worker needs travels as plain data: an item source (file paths, a Parquet path and
row numbers, or inline items) and a :class:`Preprocessor` (a small dataclass of numbers
and paths; a Hugging Face processor is loaded lazily inside each worker). Batches come
back as tensors, ints and strings only.

Items of one batch are grouped by the shapes of their decoded tensors, so an encoder runs
each group as one stacked tensor and a batch computes exactly what one-at-a-time would
(no padding ever enters a model).

>>> import numpy as np
>>> src = InlineItems([SensorWindow(np.zeros((2, 64), np.float32), 1000.0)] * 3)
>>> [len(b.indices) for b in iterate_batches(src, SensorPre(), batch_size=2, workers=0)]
[2, 1]
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import multiprocessing
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mmdata.errors import InputDataError

Decoded = dict[str, torch.Tensor]


@dataclass(frozen=True)
class SensorWindow:
    """One sensor window: ``values`` float32 ``[channels, samples]`` at ``sample_rate`` Hz."""

    values: np.ndarray
    sample_rate: float


Item = bytes | SensorWindow


# -- item sources ------------------------------------------------------------------------
class ItemSource(Protocol):
    """Items by position; ``fetch`` may raise :class:`InputDataError` for a bad item."""

    def __len__(self) -> int: ...

    def fetch(self, i: int) -> Item: ...

    def ref(self, i: int) -> str: ...


@dataclass
class InlineItems:
    """Items held in memory (tests, benches, small jobs)."""

    items: Sequence[Item]

    def __len__(self) -> int:
        return len(self.items)

    def fetch(self, i: int) -> Item:
        """Item ``i``."""
        return self.items[i]

    def ref(self, i: int) -> str:
        """``item[i]``."""
        return f"item[{i}]"


@dataclass
class MediaFiles:
    """Media files by path; each file's bytes must hash to its expected sha256."""

    paths: Sequence[str]
    sha256s: Sequence[str]
    refs: Sequence[str]

    def __len__(self) -> int:
        return len(self.paths)

    def fetch(self, i: int) -> Item:
        """The bytes of file ``i`` (checked against its sha256)."""
        try:
            data = Path(self.paths[i]).read_bytes()
        except OSError as err:
            raise InputDataError(
                f"medium {self.refs[i]!r} cannot be read: {err.strerror or err}",
                hint="rebuild the dataset (`mmdata build`)",
            ) from err
        if hashlib.sha256(data).hexdigest() != self.sha256s[i]:
            raise InputDataError(
                f"medium {self.refs[i]!r} does not match its sha256 {self.sha256s[i][:12]}...: "
                "the file changed after the dataset was built",
                hint="rebuild the dataset (`mmdata build`)",
            )
        return data

    def ref(self, i: int) -> str:
        """The file's path relative to the dataset."""
        return self.refs[i]


@dataclass
class SensorRows:
    """Rows of a ``sensors.parquet`` (columns ``values``, ``sample_rate``) by row number."""

    path: str
    rows: Sequence[int]
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "rows": list(self.rows), "_cache": {}}

    def _row_group(self, row: int) -> tuple[Any, int]:
        import pyarrow.parquet as pq

        if "file" not in self._cache:
            pf = pq.ParquetFile(self.path)
            starts = np.cumsum(
                [0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
            )
            self._cache.update(file=pf, starts=starts, group=-1, table=None)
        starts = self._cache["starts"]
        g = int(np.searchsorted(starts, row, side="right")) - 1
        if self._cache["group"] != g:  # keep one decompressed row group per process
            table = self._cache["file"].read_row_group(g, columns=["values", "sample_rate"])
            self._cache.update(group=g, table=table.combine_chunks())
        return self._cache["table"], row - int(starts[g])

    def fetch(self, i: int) -> Item:
        """The window of row ``rows[i]`` as a float32 ``[channels, samples]`` array."""
        table, j = self._row_group(self.rows[i])
        rate = table.column("sample_rate")[j].as_py()
        channels = table.column("values").chunk(0)[j].values  # ListArray: one list per channel
        lengths = [] if channels is None else np.diff(channels.offsets.to_numpy()).tolist()
        if channels is None or len(set(lengths)) != 1 or lengths[0] == 0:
            raise InputDataError(
                f"sensor window {self.ref(i)} has channels of unequal or zero length {lengths}",
                hint="rebuild the dataset; every channel of a window has the same samples",
            )
        flat = channels.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        return SensorWindow(flat.reshape(len(channels), -1), float(rate))

    def ref(self, i: int) -> str:
        """``sensors.parquet#row=N``."""
        return f"{Path(self.path).name}#row={self.rows[i]}"


# -- preprocessors (run in the workers) ------------------------------------------------
class Preprocessor(Protocol):
    """Turns one item into the tensors its encoder stacks; raises InputDataError if bad."""

    def decode(self, item: Item) -> Decoded: ...


def _bytes(item: Item, what: str) -> bytes:
    if not isinstance(item, bytes | bytearray | memoryview):
        raise InputDataError(f"expected {what} bytes, got a {type(item).__name__}")
    return bytes(item)


def decode_image(data: bytes, mode: str, draft: tuple[int, int] | None = None) -> Any:
    """Decode image bytes with Pillow into ``mode`` ("L" or "RGB"); InputDataError if bad.

    ``draft``: a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps it at
    least this size — the encoder resizes it down anyway, and decoding is most of a small
    encoder's cost per image.

    >>> decode_image(b"not an image", "L")
    Traceback (most recent call last):
    ...
    mmdata.errors.InputDataError: image cannot be decoded: cannot identify image file
      fix: re-export the image as PNG or JPEG
    """
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        if draft is not None and img.format == "JPEG":
            img.draft(mode, draft)
        img.load()
        return img if img.mode == mode else img.convert(mode)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        msg = str(err).split(" <")[0] or type(err).__name__
        raise InputDataError(
            f"image cannot be decoded: {msg}", hint="re-export the image as PNG or JPEG"
        ) from err


def decode_wav(data: bytes, sample_rate: int | None) -> torch.Tensor:
    """Decode audio bytes (WAV/FLAC/...) to mono float32, resampled to ``sample_rate``.

    >>> import soundfile as sf
    >>> buf = io.BytesIO(); sf.write(buf, np.zeros(800, np.float32), 8000, format="WAV")
    >>> decode_wav(buf.getvalue(), 16000).shape
    torch.Size([1600])
    """
    import soundfile as sf

    try:
        wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise InputDataError(
            f"audio cannot be decoded: {err}", hint="re-export the audio as 16-bit PCM WAV"
        ) from err
    if wave.shape[0] == 0:
        raise InputDataError("audio has no samples", hint="drop empty audio from the dataset")
    mono = torch.from_numpy(np.ascontiguousarray(wave.mean(axis=1)))
    if sample_rate is not None and int(rate) != int(sample_rate):
        import torchaudio.functional as taf  # type: ignore[import-untyped]

        mono = taf.resample(mono, int(rate), int(sample_rate))
    return mono


@dataclass(frozen=True)
class ThumbnailPre:
    """Image → grayscale uint8 ``[1, size, size]``."""

    size: int = 128

    def decode(self, item: Item) -> Decoded:
        """Decode and resize one image."""
        from PIL import Image

        img = decode_image(_bytes(item, "image"), "L")
        img = img.resize((self.size, self.size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        return {"pixels": torch.from_numpy(arr.copy()).unsqueeze(0)}


@dataclass(frozen=True)
class WavPre:
    """Audio → mono float32 waveform at ``sample_rate`` (at least ``min_samples`` long)."""

    sample_rate: int = 16000
    min_samples: int = 400

    def decode(self, item: Item) -> Decoded:
        """Decode and resample one clip."""
        wave = decode_wav(_bytes(item, "audio"), self.sample_rate)
        if wave.numel() < self.min_samples:
            raise InputDataError(
                f"audio is {wave.numel()} samples at {self.sample_rate} Hz, shorter than the "
                f"encoder's {self.min_samples}-sample frame",
                hint="drop clips this short or use a shorter FFT",
            )
        return {"wave": wave}


@dataclass(frozen=True)
class SensorPre:
    """Sensor window → float32 ``[C, N]`` values + its sample rate (a float64 scalar)."""

    min_samples: int = 16

    def decode(self, item: Item) -> Decoded:
        """Check and convert one window."""
        if not isinstance(item, SensorWindow):
            raise InputDataError(f"expected a sensor window, got a {type(item).__name__}")
        values = np.asarray(item.values, dtype=np.float32)
        if values.ndim != 2 or values.shape[1] < self.min_samples:
            raise InputDataError(
                f"sensor window of shape {values.shape} is too short: at least "
                f"{self.min_samples} samples per channel are needed",
                hint="use longer windows (align.window.length_ms)",
            )
        if not np.isfinite(values).all():
            raise InputDataError(
                "sensor window holds NaN or infinite values",
                hint="fix or drop the sensor's bad samples upstream",
            )
        if not item.sample_rate > 0:
            raise InputDataError(f"sensor sample_rate {item.sample_rate!r} is not > 0")
        return {
            "values": torch.from_numpy(np.array(values, dtype=np.float32, order="C")),
            "rate": torch.tensor(float(item.sample_rate), dtype=torch.float64),
        }


def _quiet_transformers() -> None:
    """No progress bars or backend notices from transformers (errors still show)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def draft_size(processor: Any) -> tuple[int, int] | None:
    """Twice the processor's target size ``(w, h)`` (None when it has no fixed size): the
    smallest JPEG decode that still resizes down with full quality.

    >>> class P: size = {"height": 64, "width": 64}
    >>> draft_size(P())
    (128, 128)
    """
    size = getattr(processor, "size", None)
    if not isinstance(size, dict):
        return None
    h = size.get("height") or size.get("shortest_edge")
    w = size.get("width") or size.get("shortest_edge")
    if not (isinstance(h, int) and isinstance(w, int)):
        return None
    return 2 * w, 2 * h


@dataclass
class HFImagePre:
    """Image → ``pixel_values`` by the model folder's ``AutoImageProcessor``."""

    model_dir: str
    _proc: Any = field(default=None, repr=False, compare=False)
    preload = ("transformers.models.auto.image_processing_auto",)

    def __getstate__(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir, "_proc": None}

    def decode(self, item: Item) -> Decoded:
        """Decode one image and run the model's image processor on it."""
        if self._proc is None:
            from transformers import AutoImageProcessor

            _quiet_transformers()
            self._proc = AutoImageProcessor.from_pretrained(self.model_dir)
        img = decode_image(_bytes(item, "image"), "RGB", draft_size(self._proc))
        out = self._proc(images=[img], return_tensors="pt")
        return {"pixel_values": out["pixel_values"][0].float()}


@dataclass
class HFAudioPre:
    """Audio → the model folder's ``AutoFeatureExtractor`` inputs, at its sampling rate."""

    model_dir: str
    sample_rate: int
    _fe: Any = field(default=None, repr=False, compare=False)
    preload = ("transformers.models.auto.feature_extraction_auto",)

    def __getstate__(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir, "sample_rate": self.sample_rate, "_fe": None}

    def decode(self, item: Item) -> Decoded:
        """Decode, resample and featurize one clip (``input_values`` or ``input_features``)."""
        if self._fe is None:
            from transformers import AutoFeatureExtractor

            _quiet_transformers()
            self._fe = AutoFeatureExtractor.from_pretrained(self.model_dir)
        wave = decode_wav(_bytes(item, "audio"), self.sample_rate)
        out = self._fe(wave.numpy(), sampling_rate=self.sample_rate, return_tensors="pt")
        key = "input_values" if "input_values" in out else "input_features"
        return {key: out[key][0].float()}


# -- batches ---------------------------------------------------------------------------
@dataclass
class Batch:
    """Decoded items of one batch, grouped by tensor shapes, plus the items that failed.

    ``groups`` holds ``(item positions, stacked tensors)``; ``errors`` holds
    ``(item position, error class, message)``.
    """

    indices: list[int]
    groups: list[tuple[list[int], Decoded]]
    errors: list[tuple[int, str, str]]
    refs: dict[int, str] = field(default_factory=dict)

    def pin_memory(self) -> Batch:
        """Page-locked copies of the tensors (DataLoader's ``pin_memory`` calls this)."""
        groups = [(pos, {k: v.pin_memory() for k, v in t.items()}) for pos, t in self.groups]
        return Batch(self.indices, groups, self.errors, self.refs)


def _signature(d: Decoded) -> tuple[Any, ...]:
    # 0-d tensors are per-item parameters (a sample rate): equal values batch together.
    return tuple(
        (k, tuple(v.shape), str(v.dtype), float(v) if v.ndim == 0 else None)
        for k, v in sorted(d.items())
    )


def collate(decoded: Sequence[tuple[int, Decoded | None, str, str]]) -> Batch:
    """Group decoded items by signature and stack each group.

    >>> a = {"x": torch.zeros(3)}; b = {"x": torch.zeros(4)}
    >>> batch = collate([(0, a, "", ""), (1, b, "", ""), (2, a, "", ""), (3, None, "E", "bad")])
    >>> [(pos, t["x"].shape[0]) for pos, t in batch.groups], batch.errors
    ([([0, 2], 2), ([1], 1)], [(3, 'E', 'bad')])
    """
    groups: dict[tuple[Any, ...], list[tuple[int, Decoded]]] = {}
    errors: list[tuple[int, str, str]] = []
    for pos, d, err_class, message in decoded:
        if d is None:
            errors.append((pos, err_class, message))
        else:
            groups.setdefault(_signature(d), []).append((pos, d))
    stacked = [
        (
            [p for p, _ in members],
            {k: torch.stack([d[k] for _, d in members]) for k in members[0][1]},
        )
        for members in groups.values()
    ]
    return Batch([pos for pos, *_ in decoded], stacked, errors)


class _Batches(torch.utils.data.Dataset[Batch]):
    """Batch ``b`` = items ``[b*size, (b+1)*size)`` read, decoded and collated."""

    def __init__(self, source: ItemSource, pre: Preprocessor, batch_size: int) -> None:
        self.source, self.pre, self.batch_size = source, pre, batch_size

    def __len__(self) -> int:
        return -(-len(self.source) // self.batch_size)

    def __getitem__(self, b: int) -> Batch:
        lo, hi = b * self.batch_size, min(len(self.source), (b + 1) * self.batch_size)
        decoded: list[tuple[int, Decoded | None, str, str]] = []
        for i in range(lo, hi):
            try:
                decoded.append((i, self.pre.decode(self.source.fetch(i)), "", ""))
            except InputDataError as err:
                decoded.append((i, None, type(err).__name__, err.message))
            except Exception as err:  # a processor choking on one odd item must not stop a run
                decoded.append((i, None, type(err).__name__, f"cannot preprocess: {err}"))
        batch = collate(decoded)
        batch.refs = {i: self.source.ref(i) for i, _, _ in batch.errors}
        return batch


@contextlib.contextmanager
def cpu_budget(device: torch.device, workers: int) -> Iterator[None]:
    """While decoding workers run, the model on the CPU gets the remaining cores.

    Without it, torch's intra-op threads and the workers fight over the same cores and a
    batch can take several times longer.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    before = torch.get_num_threads()
    budget = max(1, (cores or 1) - workers)
    if device.type != "cpu" or workers == 0 or before <= budget:
        yield
        return
    torch.set_num_threads(budget)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # the main process runs the model; workers only decode


def iterate_batches(
    source: ItemSource,
    pre: Preprocessor,
    *,
    batch_size: int,
    workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Decoded batches of ``source`` in order; ``workers`` > 0 decodes in worker processes.

    >>> src = InlineItems([b"junk"])
    >>> next(iterate_batches(src, ThumbnailPre(), batch_size=4)).errors[0][1]
    'InputDataError'
    """
    dataset = _Batches(source, pre, batch_size)
    workers = min(workers, len(dataset))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,  # each dataset item already is a batch
        shuffle=False,
        num_workers=workers,
        collate_fn=_identity,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers else None,
        multiprocessing_context=_mp_context() if workers else None,
        prefetch_factor=2 if workers else None,
    )
    yield from loader


_PRELOAD: list[str] = ["__main__", "mmdata.features.loader"]


def prepare_workers(preprocessors: Sequence[Preprocessor]) -> None:
    """Have the worker server import what these preprocessors need, once for all workers.

    Call it before the first loader of the process starts (later calls change nothing
    for a server that already runs; workers then import on first use).
    """
    for pre in preprocessors:
        for module in getattr(pre, "preload", ()):
            if module not in _PRELOAD:
                _PRELOAD.append(module)


def _mp_context() -> multiprocessing.context.BaseContext:
    # forkserver: workers fork from a clean single-threaded server that imported torch once
    # (fork from this process would copy torch's thread pools; spawn re-imports per worker).
    # Each worker still re-runs the main script, so the server also imports the mmdata
    # modules this process has (Python 3.11's forkserver never preloads __main__ itself).
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ours = sorted(m for m in sys.modules if m == "mmdata" or m.startswith("mmdata."))
        ctx.set_forkserver_preload(list(dict.fromkeys([*_PRELOAD, *ours])))
        return ctx
    return multiprocessing.get_context("spawn")


def _identity(batch: Any) -> Any:
    return batch

"""Dataset format writers: instruction samples → LLaVA JSON, LLaMA-Factory ShareGPT, HF messages.

:func:`write_formats` validates every :class:`~mmdata.build.samples.Sample` once, stores each
distinct medium once, and writes the requested formats from the same accepted samples::

    OUT/
      media/<sha256>.<ext>         every distinct medium once (content-addressed, resumable)
      media.parquet                one row per medium: sha256, kind, role, ext, path
      llava/{split}.json           LLaVA: [{id, image, conversations}]; image folder = OUT
      llama_factory/{split}.json   LLaMA-Factory ShareGPT: {id, messages, images, audios, videos}
      llama_factory/dataset_info.json   one entry per split: "<name>_<split>"
      messages/{split}.parquet     HF chat messages with typed content parts, media embedded

Placement of media, per tool:

* **LLaVA** joins ``image`` to its ``--image_folder``: pass ``--image_folder OUT`` (paths are
  ``media/<sha>.png``). One image is a string, several a list (LLaVA-NeXT/OneVision style); a
  text-only sample has no ``image`` key. LLaVA has no audio, so samples with audio are left out
  of this format only (with a reason). A system prompt, which LLaVA's data format has no place
  for, opens the human turn.
* **LLaMA-Factory** joins media paths to ``media_dir`` (default: its ``dataset_dir``). Paths are
  written as ``../media/<sha>.<ext>``, so ``dataset_dir=OUT/llama_factory`` works unchanged.
* **HF messages** Parquet embeds the media bytes (self-contained) and declares ``images`` as
  ``List(Image())`` and ``audios`` as ``List(Audio())`` in the ``huggingface`` schema metadata,
  so ``datasets.load_dataset("parquet", data_files=...)`` decodes them.

Validation happens here, at export time: a sample whose ``<image>``/``<audio>`` placeholders do
not match its media, whose medium is empty, undecodable or of the wrong kind, whose split is
unknown or whose id repeats is rejected from every format (format ``"*"``) with a reason. Output
is deterministic: samples sorted by split (train, validation, test) then ``sample_id``; JSON
with sorted keys and fixed separators; every file written atomically. A split with no samples
has no file (a stale one from an earlier run is removed).

>>> import io, tempfile
>>> from PIL import Image
>>> from mmdata.build.samples import Media, Sample
>>> buf = io.BytesIO(); Image.new("RGB", (4, 4), "red").save(buf, "PNG")
>>> img = Media(kind="image", data=buf.getvalue(), ext="png", role="frame")
>>> s = Sample(record_id="r1", task="describe", template="describe/0",
...            prompt="<image>\\nWhat do you see?", response="A red square.", images=[img])
>>> rep = write_formats([s], Path(tempfile.mkdtemp()), ["llava", "messages"])
>>> rep.written["llava"], rep.rejected
({'train': 1, 'validation': 0, 'test': 0}, [])
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
from PIL import Image, UnidentifiedImageError

from mmdata import atomic
from mmdata.build.samples import SPLITS, Media, Sample, prompt_parts
from mmdata.errors import UsageError

#: The formats :func:`write_formats` knows, in the order they are written.
FORMATS: tuple[str, ...] = ("llava", "llama_factory", "messages")
MEDIA_DIR = "media"
MEDIA_INDEX = "media.parquet"
LLAVA_AUDIO_REASON = "LLaVA format holds images only; set build.audio_as: spectrogram_image or none"
#: Media file name extensions accepted per kind, and the decoder's name for each.
_IMAGE_EXTS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
_AUDIO_EXTS = {"wav": "WAV", "flac": "FLAC"}
_BATCH_ROWS = 256  # messages Parquet rows per write batch (bounds memory with embedded media)

_HF_MEDIA = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_CONTENT_PART = pa.struct([("type", pa.string()), ("text", pa.string())])
_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.list_(_CONTENT_PART))])
_TENSOR = pa.struct(
    [("name", pa.string()), ("shape", pa.list_(pa.int64())), ("values", pa.list_(pa.float32()))]
)


@dataclass
class FormatsReport:
    """What :func:`write_formats` wrote and rejected.

    ``written[format][split]`` counts samples per file; ``rejected`` holds
    ``(sample_id, format or "*", reason)``, ``"*"`` meaning rejected from every format;
    ``files`` are paths relative to the output folder.

    >>> r = FormatsReport(formats=["llava"], samples_in=2, samples_out=1,
    ...                   rejected=[("ab", "*", "bad")])
    >>> r.to_json()["rejected"]
    [{'sample_id': 'ab', 'format': '*', 'reason': 'bad'}]
    """

    formats: list[str]
    samples_in: int = 0
    samples_out: int = 0  # accepted by the common checks (written in at least one format)
    written: dict[str, dict[str, int]] = field(default_factory=dict)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    media: dict[str, int] = field(
        default_factory=lambda: {"distinct": 0, "written": 0, "reused": 0}
    )

    @property
    def quarantined(self) -> int:
        """Samples rejected from every format (``samples_in == samples_out + quarantined``)."""
        return sum(1 for _, fmt, _ in self.rejected if fmt == "*")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (sorted, deterministic)."""
        return {
            "formats": list(self.formats),
            "samples_in": self.samples_in,
            "samples_out": self.samples_out,
            "quarantined": self.quarantined,
            "written": {f: dict(c) for f, c in sorted(self.written.items())},  # splits in order
            "rejected": [
                {"sample_id": s, "format": f, "reason": r} for s, f, r in sorted(self.rejected)
            ],
            "files": sorted(self.files),
            "media": dict(sorted(self.media.items())),
        }


@dataclass
class _Ctx:
    out_dir: Path
    name: str
    embed_media: bool
    report: FormatsReport
    by_split: dict[str, list[Sample]]
    with_tensors: bool


def write_formats(
    samples: Sequence[Sample],
    out_dir: Path,
    formats: Sequence[str],
    name: str = "mmdata",
    *,
    embed_media: bool = True,
) -> FormatsReport:
    """Validate ``samples`` and write them in each of ``formats`` under ``out_dir``.

    ``formats`` are names from :data:`FORMATS`; ``name`` prefixes the LLaMA-Factory dataset
    names (``<name>_train`` ...). ``embed_media=False`` stores absolute media paths instead of
    bytes in the messages Parquet (smaller, but tied to this folder). Media already present
    with the same size and hash are not rewritten, so a re-run resumes cheaply.

    >>> import tempfile
    >>> s = Sample(record_id="r", task="t", template="t/0", prompt="<image>?", response="x")
    >>> rep = write_formats([s], Path(tempfile.mkdtemp()), ["messages"])
    >>> rep.rejected  # doctest: +ELLIPSIS
    [('...', '*', '1 <image> placeholder(s) but 0 image(s) attached')]
    """
    fmts = _check_formats(formats, name)
    out_dir = Path(out_dir)
    report = FormatsReport(formats=list(fmts), samples_in=len(samples))
    accepted = _validate(samples, report)
    report.samples_out = len(accepted)
    by_split: dict[str, list[Sample]] = {sp: [] for sp in SPLITS}
    for s in accepted:
        by_split[s.split].append(s)
    _write_media(out_dir, accepted, report)
    ctx = _Ctx(
        out_dir=out_dir,
        name=name,
        embed_media=embed_media,
        report=report,
        by_split=by_split,
        with_tensors=any(s.tensors for s in accepted),
    )
    for fmt in fmts:
        report.written[fmt] = {}
        _WRITERS[fmt](ctx)
    report.rejected.sort()
    report.files.sort()
    return report


def _check_formats(formats: Sequence[str], name: str) -> list[str]:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(
            f"unknown dataset format(s) {unknown!r}",
            hint=f"use any of {', '.join(FORMATS)} in build.formats",
        )
    if not name or any(c in name for c in "/\\ \0"):
        raise UsageError(
            f"dataset name {name!r} is not usable in file and dataset names",
            hint="use letters, digits, '-' or '_'",
        )
    return [f for f in FORMATS if f in formats]


# ---------------------------------------------------------------------------------------------
# Validation


def _validate(samples: Iterable[Sample], report: FormatsReport) -> list[Sample]:
    """The samples every format may write, sorted; the others go to ``report.rejected``."""
    order = {sp: i for i, sp in enumerate(SPLITS)}
    keyed = sorted(  # prompt/response break ties, so which duplicate wins is deterministic too
        ((order.get(s.split, len(SPLITS)), s.split, s.sample_id, s) for s in samples),
        key=lambda t: (*t[:3], t[3].prompt, t[3].response),
    )
    seen: dict[str, str] = {}
    verdicts: dict[str, str | None] = {}  # sha256 → decode problem (each medium checked once)
    accepted: list[Sample] = []
    for _, split, sid, s in keyed:
        problem = _sample_problem(s, split, seen.get(sid), verdicts)
        if problem is None:
            seen[sid] = split
            accepted.append(s)
        else:
            report.rejected.append((sid, "*", problem))
    return accepted


def _sample_problem(
    s: Sample, split: str, dup_split: str | None, verdicts: dict[str, str | None]
) -> str | None:
    if split not in SPLITS:
        return f"split {split!r} is not one of {', '.join(SPLITS)}"
    if dup_split is not None:
        return f"duplicate sample_id (already written in split {dup_split!r})"
    problem = s.media_problem()
    if problem:
        return problem
    for kind, media in (("image", s.images), ("audio", s.audios)):
        for i, m in enumerate(media):
            if m.kind != kind:
                return f"{kind}s[{i}] is a medium of kind {m.kind!r}, expected {kind!r}"
            if m.sha256 not in verdicts:
                verdicts[m.sha256] = _media_problem(m)
            bad = verdicts[m.sha256]
            if bad:
                return f"{kind}s[{i}] ({m.sha256[:12]}.{m.ext}): {bad}"
    for label, value in (("target", s.target), ("provenance", s.provenance)):
        try:
            _dumps(value)
        except (TypeError, ValueError) as err:
            return f"{label} is not JSON-serializable: {err}"
    for tname, arr in sorted(s.tensors.items()):
        try:
            np.asarray(arr, dtype=np.float32)
        except (TypeError, ValueError) as err:
            return f"tensor {tname!r} is not numeric: {err}"
    return None


def _media_problem(m: Media) -> str | None:
    """Why a medium cannot be used (empty, wrong extension, undecodable), or None."""
    if not m.data:
        return "medium is missing (no bytes)"
    exts = _IMAGE_EXTS if m.kind == "image" else _AUDIO_EXTS
    expected = exts.get(m.ext.lower())
    if expected is None:
        return f"extension {m.ext!r} is not one of {', '.join(exts)} for {m.kind}"
    if m.kind == "image":
        try:
            with Image.open(io.BytesIO(m.data)) as im:
                found = im.format
                im.load()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
            return f"image does not decode: {err}"
    else:
        try:
            with sf.SoundFile(io.BytesIO(m.data)) as snd:
                found = snd.format
                n = snd.frames
                got = len(snd.read(dtype="float32"))
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
            return f"audio does not decode: {err}"
        if got != n:
            return f"audio is truncated: {got} of {n} frames decode"
        if found == "WAV" and (cut := _wav_shortfall(m.data)):
            return f"audio is truncated: its data chunk lacks {cut} bytes"
    if found != expected:
        return f"{found} data in a file named .{m.ext}"
    return None


def _wav_shortfall(data: bytes) -> int:
    """Bytes missing from a RIFF/WAVE ``data`` chunk (libsndfile reads a cut file silently)."""
    pos = 12
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos : pos + 4] == b"data":
            return 0 if size == 0xFFFFFFFF else max(0, pos + 8 + size - len(data))
        pos += 8 + size + (size & 1)
    return 0


def _dumps(value: Any) -> str:
    """Deterministic JSON (sorted keys, fixed separators, UTF-8, numpy scalars as numbers)."""
    return json.dumps(
        value,
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,
        default=_json_default,
    )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} value {obj!r:.60} is not JSON-serializable")


# ---------------------------------------------------------------------------------------------
# Media


def _media_path(m: Media) -> str:
    return f"{MEDIA_DIR}/{m.filename}"


def _write_media(out_dir: Path, accepted: Sequence[Sample], report: FormatsReport) -> None:
    """Write each distinct medium once (skipping intact ones) and the ``media.parquet`` index."""
    distinct: dict[str, Media] = {}
    for s in accepted:
        for m in (*s.images, *s.audios):
            distinct.setdefault(m.sha256, m)
    for sha in sorted(distinct):
        m = distinct[sha]
        path = out_dir / _media_path(m)
        if _intact(path, m):
            report.media["reused"] += 1
        else:
            atomic.write_bytes(path, m.data)
            report.media["written"] += 1
    report.media["distinct"] = len(distinct)
    shas = sorted(distinct)
    table = pa.table(
        {
            "sha256": pa.array(shas, pa.string()),
            "kind": pa.array([distinct[h].kind for h in shas], pa.string()),
            "role": pa.array([distinct[h].role for h in shas], pa.string()),
            "ext": pa.array([distinct[h].ext for h in shas], pa.string()),
            "path": pa.array([_media_path(distinct[h]) for h in shas], pa.string()),
        }
    )
    atomic.write_parquet(out_dir / MEDIA_INDEX, table)
    report.files.append(MEDIA_INDEX)


def _intact(path: Path, m: Media) -> bool:
    """True when ``path`` already holds exactly ``m`` (same size, same sha256)."""
    try:
        if path.stat().st_size != len(m.data):
            return False
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest() == m.sha256
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Writers


def _json_list(path: Path, items: Iterable[Any]) -> None:
    """Atomically write a JSON array, one item a line (valid JSON, diff-friendly)."""
    with atomic.atomic_open(path, "w") as fh:
        first = True
        for item in items:
            fh.write(("[\n" if first else ",\n") + _dumps(item))
            first = False
        fh.write("[]\n" if first else "\n]\n")


def _per_split(
    ctx: _Ctx,
    fmt: str,
    ext: str,
    keep: Callable[[Sample], str | None],
    write: Callable[[Path, list[Sample]], None],
) -> list[str]:
    """Write one file per non-empty split of ``fmt``; return the splits written.

    ``keep`` returns a reason to leave a sample out of this format only, or None.
    """
    written = []
    for split in SPLITS:
        rows = []
        for s in ctx.by_split[split]:
            reason = keep(s)
            if reason is None:
                rows.append(s)
            else:
                ctx.report.rejected.append((s.sample_id, fmt, reason))
        rel = f"{fmt}/{split}.{ext}"
        path = ctx.out_dir / rel
        ctx.report.written[fmt][split] = len(rows)
        if not rows:
            path.unlink(missing_ok=True)  # a stale file from an earlier run would mislead
            continue
        write(path, rows)
        ctx.report.files.append(rel)
        written.append(split)
    return written


def _write_llava(ctx: _Ctx) -> None:
    def item(s: Sample) -> dict[str, Any]:
        human = s.prompt if not s.system else f"{s.system}\n\n{s.prompt}"
        out: dict[str, Any] = {
            "id": s.sample_id,
            "conversations": [
                {"from": "human", "value": human},
                {"from": "gpt", "value": s.response},
            ],
        }
        paths = [_media_path(m) for m in s.images]
        if len(paths) == 1:
            out["image"] = paths[0]
        elif paths:
            out["image"] = paths
        return out

    _per_split(
        ctx,
        "llava",
        "json",
        lambda s: LLAVA_AUDIO_REASON if s.audios else None,
        lambda path, rows: _json_list(path, (item(s) for s in rows)),
    )


#: The ``columns`` and ``tags`` of every LLaMA-Factory dataset_info entry we write.
LLAMA_FACTORY_COLUMNS = {
    "messages": "messages",
    "images": "images",
    "audios": "audios",
    "videos": "videos",
}
LLAMA_FACTORY_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


def _write_llama_factory(ctx: _Ctx) -> None:
    up = "../"  # media paths resolve against dataset_dir = OUT/llama_factory

    def item(s: Sample) -> dict[str, Any]:
        messages = [{"role": "system", "content": s.system}] if s.system else []
        messages += [
            {"role": "user", "content": s.prompt},
            {"role": "assistant", "content": s.response},
        ]
        return {
            "id": s.sample_id,
            "messages": messages,
            "images": [up + _media_path(m) for m in s.images],
            "audios": [up + _media_path(m) for m in s.audios],
            "videos": [],
        }

    splits = _per_split(
        ctx,
        "llama_factory",
        "json",
        lambda s: None,
        lambda path, rows: _json_list(path, (item(s) for s in rows)),
    )
    info = {
        f"{ctx.name}_{split}": {
            "file_name": f"{split}.json",
            "formatting": "sharegpt",
            "columns": dict(LLAMA_FACTORY_COLUMNS),
            "tags": dict(LLAMA_FACTORY_TAGS),
        }
        for split in splits
    }
    rel = "llama_factory/dataset_info.json"
    atomic.write_text(
        ctx.out_dir / rel, json.dumps(info, sort_keys=True, ensure_ascii=False, indent=2) + "\n"
    )
    ctx.report.files.append(rel)


def messages_schema(with_tensors: bool = False) -> pa.Schema:
    """Arrow schema of ``messages/{split}.parquet``, with its HF features metadata.

    >>> s = messages_schema()
    >>> json.loads(s.metadata[b"huggingface"])["info"]["features"]["images"]
    {'_type': 'List', 'feature': {'_type': 'Image'}}
    """
    fields: list[tuple[str, pa.DataType, Any]] = [
        ("sample_id", pa.string(), _hf_string()),
        ("record_id", pa.string(), _hf_string()),
        ("task", pa.string(), _hf_string()),
        ("template", pa.string(), _hf_string()),
        ("label", pa.string(), _hf_string()),
        ("messages", pa.list_(_MESSAGE), _hf_list(
            {"role": _hf_string(),
             "content": _hf_list({"type": _hf_string(), "text": _hf_string()})})),
        ("images", pa.list_(_HF_MEDIA), _hf_list({"_type": "Image"})),
        ("audios", pa.list_(_HF_MEDIA), _hf_list({"_type": "Audio"})),
        ("target", pa.string(), _hf_string()),
    ]  # fmt: skip
    if with_tensors:
        fields.append(
            ("tensors", pa.list_(_TENSOR), _hf_list({
                "name": _hf_string(),
                "shape": _hf_list({"_type": "Value", "dtype": "int64"}),
                "values": _hf_list({"_type": "Value", "dtype": "float32"})})),
        )  # fmt: skip
    fields.append(("provenance", pa.string(), _hf_string()))
    features = {n: f for n, _, f in fields}
    return pa.schema(
        [pa.field(n, t) for n, t, _ in fields],
        metadata={b"huggingface": json.dumps({"info": {"features": features}}).encode()},
    )


def _hf_string() -> dict[str, str]:
    return {"_type": "Value", "dtype": "string"}


def _hf_list(feature: Any) -> dict[str, Any]:
    return {"_type": "List", "feature": feature}


def _write_messages(ctx: _Ctx) -> None:
    schema = messages_schema(ctx.with_tensors)

    def hf_media(m: Media) -> dict[str, Any]:
        if ctx.embed_media:
            return {"bytes": m.data, "path": m.filename}
        return {"bytes": None, "path": str((ctx.out_dir / _media_path(m)).resolve())}

    def row(s: Sample) -> dict[str, Any]:
        user = [{"type": p["type"], "text": p.get("text")} for p in prompt_parts(s.prompt)]
        messages = [{"role": "system", "content": [_text(s.system)]}] if s.system else []
        messages += [
            {"role": "user", "content": user},
            {"role": "assistant", "content": [_text(s.response)]},
        ]
        out: dict[str, Any] = {
            "sample_id": s.sample_id,
            "record_id": s.record_id,
            "task": s.task,
            "template": s.template,
            "label": s.label,
            "messages": messages,
            "images": [hf_media(m) for m in s.images],
            "audios": [hf_media(m) for m in s.audios],
            "target": _dumps(s.target),
            "provenance": _dumps(s.provenance),
        }
        if ctx.with_tensors:
            out["tensors"] = [_tensor(n, v) for n, v in sorted(s.tensors.items())]
        return out

    def write(path: Path, rows: list[Sample]) -> None:
        with (
            atomic.atomic_path(path) as tmp,
            pq.ParquetWriter(tmp, schema, compression="zstd") as writer,
        ):
            for i in range(0, len(rows), _BATCH_ROWS):
                batch = [row(s) for s in rows[i : i + _BATCH_ROWS]]
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))

    _per_split(ctx, "messages", "parquet", lambda s: None, write)


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _tensor(name: str, value: Any) -> dict[str, Any]:
    arr = np.asarray(value, dtype=np.float32)
    return {"name": name, "shape": list(arr.shape), "values": arr.ravel().tolist()}


_WRITERS: dict[str, Callable[[_Ctx], None]] = {
    "llava": _write_llava,
    "llama_factory": _write_llama_factory,
    "messages": _write_messages,
}

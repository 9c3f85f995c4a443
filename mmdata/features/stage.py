"""The features stage: ``RUN/dataset`` media and sensor windows → cached encoder features.

Inputs (written by the dataset builder):

* ``RUN/dataset/media.parquet``: ``sha256, kind ("image"|"audio"), role, ext, path``
  (``path`` relative to ``RUN/dataset``), one row per distinct medium;
* ``RUN/dataset/sensors.parquet``: ``sha256, record_id, stream_id, sample_rate, channels,
  values`` (one window per row).

Per modality with an encoder (``features.image`` / ``audio`` / ``sensor``), every item's
entry key is looked up in the content-addressed cache (:mod:`mmdata.features.cache`); only
the misses — new content, a changed encoder, a corrupt entry — are read, decoded in loader
workers and encoded in batches on the device. With ``engine: ray`` the misses of every
modality are encoded by one Ray Data actor pool instead (one GPU per actor when the cluster
has GPUs; :mod:`mmdata.features.jobs`), and this process writes the cache in the same order,
so every output file is byte-identical to a local run's. Outputs:

* ``RUN/features/index.parquet``: one row per input row — ``sha256, modality, role,
  record_id, stream_id, encoder, encoder_id, encoder_key, entry_key, dtype, shape, dim,
  shard, tensor, checksum`` — where ``shard`` is relative to ``RUN/features`` (or absolute
  for a shared ``cache_dir``) and ``tensor`` the entry's name in it;
* ``RUN/features/summary.json``: per modality items, computed, cache hits, corrupt entries
  recomputed, quarantined, device, dtype, seconds and items/s (timings are the only
  run-dependent values);
* ``RUN/features/cache/`` unless ``features.cache_dir`` points elsewhere. The runner
  publishes a stage by swapping folders, so the previous cache is hard-linked into the new
  folder first (shards are immutable): a forced re-run computes nothing.

An undecodable medium or a malformed window is quarantined; in = out + quarantined.
:func:`load_features` reads the vectors back for a trainer.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mmdata import atomic
from mmdata.config import PipelineConfig, config_hash
from mmdata.engine import make_engine
from mmdata.errors import InputDataError, StageError
from mmdata.features.cache import FeatureCache, entry_key, link_tree, read_shard, tensor_checksum
from mmdata.features.encoders import Encoder, Modality, build_encoder, resolve_device
from mmdata.features.jobs import (
    ModalityWork,
    encode_batch,
    encode_on_pool,
    encoder_spec,
    ray_device,
    ray_pool,
)
from mmdata.features.loader import (
    ItemSource,
    MediaFiles,
    SensorRows,
    cpu_budget,
    iterate_batches,
    prepare_workers,
)
from mmdata.rundir import RunDir, StageCounts
from mmdata.runner import ProgressFn, StageContext, StageOutcome, StageSpec, run_stage

STAGE = "features"
SUMMARY_SCHEMA_VERSION = "mmdata.features/1"
_LOOKUP_CHUNK = 8192
INDEX_SCHEMA = pa.schema(
    [
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("role", pa.string()),
        pa.field("record_id", pa.string()),
        pa.field("stream_id", pa.string()),
        pa.field("encoder", pa.string(), nullable=False),
        pa.field("encoder_id", pa.string(), nullable=False),
        pa.field("encoder_key", pa.string(), nullable=False),
        pa.field("entry_key", pa.string(), nullable=False),
        pa.field("dtype", pa.string(), nullable=False),
        pa.field("shape", pa.list_(pa.int64()), nullable=False),
        pa.field("dim", pa.int64(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("tensor", pa.string(), nullable=False),
        pa.field("checksum", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True)
class _Item:
    sha256: str
    role: str | None
    record_id: str | None
    stream_id: str | None
    ref: str  # source_ref for quarantine


def _encoders(config: PipelineConfig, device: torch.device) -> dict[Modality, Encoder]:
    f = config.features
    chosen: list[tuple[Modality, Any]] = [
        ("image", f.image),
        ("audio", f.audio),
        ("sensor", f.sensor),
    ]
    return {m: build_encoder(c, m, device=device) for m, c in chosen if c is not None}


Source = Callable[[list[int]], ItemSource]


def _media_items(dataset: Path, kind: str) -> tuple[list[_Item], Source]:
    path = dataset / "media.parquet"
    rows = []
    if path.exists():
        table = pq.read_table(path, columns=["sha256", "kind", "role", "path"])
        rows = [r for r in table.to_pylist() if r["kind"] == kind]
    items = [_Item(r["sha256"], r["role"], None, None, f"dataset/{r['path']}") for r in rows]
    base = str(dataset)

    def source(positions: list[int]) -> ItemSource:
        return MediaFiles(
            [os.path.join(base, rows[p]["path"]) for p in positions],
            [items[p].sha256 for p in positions],
            [items[p].ref for p in positions],
        )

    return items, source


def _sensor_items(dataset: Path) -> tuple[list[_Item], Source]:
    path = dataset / "sensors.parquet"
    rows = []
    if path.exists():
        rows = pq.read_table(path, columns=["sha256", "record_id", "stream_id"]).to_pylist()
    items = [
        _Item(
            r["sha256"],
            r["stream_id"],
            r["record_id"],
            r["stream_id"],
            f"dataset/sensors.parquet#row={i}",
        )
        for i, r in enumerate(rows)
    ]
    return items, lambda positions: SensorRows(str(path), positions)


@dataclass
class _Result:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]


@dataclass
class _Plan:
    """One modality's items, their entry keys and the cache misses to compute."""

    items: list[_Item]
    keys: list[str]
    unique: list[str]
    work: ModalityWork


def _plan(enc: Encoder, items: list[_Item], make_source: Source, cache: FeatureCache) -> _Plan:
    """Look up every distinct entry; the misses (first occurrences, in order) to compute."""
    t0 = time.perf_counter()
    keys = [entry_key(it.sha256, enc.key) for it in items]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    unique = list(first)
    missing: list[str] = []
    for lo in range(0, len(unique), _LOOKUP_CHUNK):
        _, miss = cache.lookup(unique[lo : lo + _LOOKUP_CHUNK])
        missing.extend(miss)
    source = make_source([first[k] for k in missing]) if missing else None
    work = ModalityWork(enc, cache, missing, source, seconds=time.perf_counter() - t0)
    return _Plan(items, keys, unique, work)


def _compute_local(ctx: StageContext, work: ModalityWork, workers: int) -> None:
    """Decode the misses in loader workers and encode them batch by batch in this process."""
    t0 = time.perf_counter()
    enc, missing = work.enc, work.missing
    if work.source is not None:
        n_batches = -(-len(missing) // enc.batch_size)
        n_workers = min(workers, n_batches) if n_batches > 1 else 0
        with cpu_budget(enc.device, n_workers):
            for batch in iterate_batches(
                work.source,
                enc.preprocessor,
                batch_size=enc.batch_size,
                workers=n_workers,
                pin_memory=enc.device.type == "cuda",
            ):
                feats, errors = encode_batch(enc, batch)
                work.cache.put([missing[p] for p in feats], list(feats.values()))
                work.computed += len(feats)
                for pos, err_class, message in errors:
                    work.failed[missing[pos]] = (err_class, message)
                work.done += len(batch.indices)
                work.report(ctx)
    work.seconds += time.perf_counter() - t0


def _finish(ctx: StageContext, plan: _Plan, shard_base: Path) -> _Result:
    """Write the cache's pending entries; index rows, quarantine rows and the summary."""
    t0 = time.perf_counter()
    work = plan.work
    enc, cache, failed = work.enc, work.cache, work.failed
    cache.flush()
    rows: list[dict[str, Any]] = []
    refs: dict[str, str] = {}
    for it, k in zip(plan.items, plan.keys, strict=True):
        if k in failed:
            err_class, message = failed[k]
            ctx.quarantine.record(
                it.ref,
                err_class,
                message,
                item_id=it.sha256,
                locator=f"{enc.modality}:{it.role}",
            )
            continue
        entry = cache.index[k]
        if entry.shard not in refs:
            shard = cache.root / entry.shard
            try:
                refs[entry.shard] = shard.relative_to(shard_base).as_posix()
            except ValueError:
                refs[entry.shard] = str(shard.resolve())
        shard_ref = refs[entry.shard]
        rows.append(
            {
                "sha256": it.sha256,
                "modality": enc.modality,
                "role": it.role,
                "record_id": it.record_id,
                "stream_id": it.stream_id,
                "encoder": getattr(enc, "source", enc.id),
                "encoder_id": enc.id,
                "encoder_key": enc.key,
                "entry_key": k,
                "dtype": entry.dtype,
                "shape": list(entry.shape),
                "dim": _prod(entry.shape),
                "shard": shard_ref,
                "tensor": k,
                "checksum": entry.checksum,
            }
        )
    seconds = work.seconds + time.perf_counter() - t0
    shapes = sorted({tuple(r["shape"]) for r in rows})
    summary = {
        "encoder": getattr(enc, "source", enc.id),
        "encoder_id": enc.id,
        "encoder_key": enc.key,
        "revision": enc.revision,
        "items": len(plan.items),
        "unique": len(plan.unique),
        "computed": work.computed,
        "cache_hits": len(plan.unique) - len(work.missing),
        "corrupt_recomputed": cache.stats.corrupt,
        "quarantined": len(plan.items) - len(rows),
        "device": str(enc.device),
        "dtype": enc.dtype,
        "shapes": [list(s) for s in shapes],
        "seconds": round(seconds, 4),
        "items_per_s": round(len(plan.items) / seconds, 1) if seconds > 0 else None,
    }
    return _Result(rows, summary)


def _encode_modality(
    ctx: StageContext,
    enc: Encoder,
    items: list[_Item],
    make_source: Source,
    cache_dir: Path,
    workers: int,
    shard_base: Path,
) -> _Result:
    """The local engine: look up, compute the misses here, write the index rows."""
    with FeatureCache(cache_dir, enc.key) as cache:
        plan = _plan(enc, items, make_source, cache)
        _compute_local(ctx, plan.work, workers)
        return _finish(ctx, plan, shard_base)


def _encode_on_ray(
    ctx: StageContext,
    config: PipelineConfig,
    encoders: dict[Modality, Encoder],
    inputs: dict[Modality, tuple[list[_Item], Source]],
    cache_dir: Path,
) -> list[_Result]:
    """The Ray engine: look up every modality, compute all misses in one actor pool
    (:mod:`mmdata.features.jobs`), then write the index rows as the local path does."""
    engine = make_engine(config, ctx.run)  # Ray stays up for the next stage
    with contextlib.ExitStack() as stack:
        plans = []
        for modality, enc in encoders.items():
            cache = stack.enter_context(FeatureCache(cache_dir, enc.key))
            plans.append(_plan(enc, *inputs[modality], cache))
        if any(p.work.missing for p in plans):  # a warm run needs no actors
            specs = [encoder_spec(e, getattr(config.features, m)) for m, e in encoders.items()]
            pool = ray_pool(config, engine, plans[0].work.enc.device)
            encode_on_pool(ctx, [p.work for p in plans], specs, pool)
        return [_finish(ctx, p, ctx.out_dir) for p in plans]


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """Console lines for a features summary (what the CLI prints).

    >>> summary_lines({"warm": True, "modalities": {"image": {"items": 3, "computed": 0,
    ...     "cache_hits": 3, "corrupt_recomputed": 0, "quarantined": 0, "encoder": "thumbnail",
    ...     "device": "cpu", "dtype": "float32", "seconds": 0.01, "items_per_s": 300.0}}})[-1]
    'warm cache: nothing computed'
    """
    lines = []
    for m, s in summary["modalities"].items():
        lines.append(
            f"{m}: {s['items']} items with {s['encoder']} on {s['device']} ({s['dtype']}): "
            f"{s['computed']} computed, {s['cache_hits']} from cache, "
            f"{s['corrupt_recomputed']} corrupt recomputed, {s['quarantined']} quarantined "
            f"in {s['seconds']:.2f} s"
        )
    if summary["warm"]:
        lines.append("warm cache: nothing computed")
    return lines


def run_features(
    run: RunDir, config: PipelineConfig, *, progress: ProgressFn | None = None, force: bool = False
) -> StageOutcome:
    """The ``features`` stage (after ``dataset``): encode every medium and sensor window.

    >>> with RunDir.open(cfg.run_dir) as run:  # doctest: +SKIP
    ...     outcome = run_features(run, cfg, force=True)  # a warm re-run computes nothing
    >>> json.loads((outcome.out_dir / "summary.json").read_text())["warm"]  # doctest: +SKIP
    True
    """
    rec = run.manifest.stages.get("dataset")
    if rec is None or rec.status != "complete":
        raise StageError(
            "features needs a completed dataset (build) stage in this run",
            hint="run `mmdata build` first",
        )
    fcfg = config.features
    # The device (the Ray cluster's when on Ray) shapes an HF encoder's key (its precision).
    if config.engine == "ray":
        device = ray_device(config, make_engine(config, run))
    else:
        device = resolve_device(fcfg.device)
    encoders = _encoders(config, device)  # hashes model weights up front
    spec = StageSpec(
        name=STAGE,
        version="1",
        config=fcfg.model_dump(mode="json", exclude={"loader_workers"}),
        # Retrained weights at the same path change the encoder key: re-run.
        inputs_fingerprint=config_hash(
            {"dataset": rec.fingerprint, "encoders": {m: e.key for m, e in encoders.items()}}
        ),
    )
    dataset = run.stage_path("dataset")
    prepare_workers([e.preprocessor for e in encoders.values()])

    def stage(ctx: StageContext) -> StageCounts:
        if fcfg.cache_dir is None:
            cache_dir = ctx.out_dir / "cache"
            previous = run.stage_path(STAGE) / "cache"
            if previous.is_dir():
                link_tree(previous, cache_dir)
        else:
            cache_dir = Path(fcfg.cache_dir).expanduser().resolve()
        inputs = {
            m: _sensor_items(dataset) if m == "sensor" else _media_items(dataset, m)
            for m in encoders
        }
        if config.engine == "ray":
            results = _encode_on_ray(ctx, config, encoders, inputs, cache_dir)
        else:
            results = [
                _encode_modality(ctx, enc, *inputs[m], cache_dir, fcfg.loader_workers, ctx.out_dir)
                for m, enc in encoders.items()
            ]
        rows = [row for res in results for row in res.rows]
        modalities = dict(zip(encoders, (res.summary for res in results), strict=True))
        n_in = sum(len(items) for items, _ in inputs.values())
        table = pa.table({n: [r[n] for r in rows] for n in INDEX_SCHEMA.names}, schema=INDEX_SCHEMA)
        atomic.write_parquet(ctx.out_dir / "index.parquet", table)
        warm = all(s["computed"] == 0 for s in modalities.values())
        summary = {"schema_version": SUMMARY_SCHEMA_VERSION, "warm": warm, "modalities": modalities}
        atomic.write_json(ctx.out_dir / "summary.json", summary)
        for line in summary_lines(summary):
            ctx.report(line, 1, 1)
        return StageCounts(in_=n_in, out=len(rows), quarantined=n_in - len(rows))

    return run_stage(run, spec, stage, progress=progress, force=force)


# -- reading features back ---------------------------------------------------------------
def _index_path(source: Path | str) -> Path:
    p = Path(source)
    for cand in (p, p / "index.parquet", p / STAGE / "index.parquet"):
        if cand.is_file():
            return cand
    raise InputDataError(
        f"no features index at {str(p)!r}", hint="run `mmdata features` on the run first"
    )


class FeatureStore:
    """Reads vectors listed by a features index; shards are read once and kept.

    >>> FeatureStore("/nonexistent")
    Traceback (most recent call last):
    ...
    mmdata.errors.InputDataError: no features index at '/nonexistent'
      fix: run `mmdata features` on the run first
    """

    def __init__(self, source: Path | str) -> None:
        self.index_path = _index_path(source)
        self.base = self.index_path.parent
        table = pq.read_table(
            self.index_path, columns=["sha256", "modality", "shard", "tensor", "checksum"]
        ).to_pylist()
        self._where: dict[tuple[str, str], dict[str, Any]] = {}
        for r in table:
            self._where.setdefault((r["modality"], r["sha256"]), r)
        self._shards: dict[str, dict[str, torch.Tensor]] = {}

    def _shard(self, ref: str) -> dict[str, torch.Tensor]:
        if ref not in self._shards:
            path = Path(ref) if Path(ref).is_absolute() else self.base / ref
            try:
                self._shards[ref] = read_shard(path)
            except Exception as err:  # any unreadable shard
                raise InputDataError(
                    f"feature shard {str(path)!r} is unreadable: {err}",
                    hint="re-run `mmdata features --force`",
                ) from err
        return self._shards[ref]

    def load(self, sha256s: Sequence[str], modality: str) -> torch.Tensor:
        """Stacked features ``[len(sha256s), ...]`` of one modality, checksums verified."""
        out = []
        for sha in sha256s:
            row = self._where.get((modality, sha))
            if row is None:
                raise InputDataError(
                    f"no {modality} features for sha256 {sha!r} in {str(self.index_path)!r}",
                    hint="it may have been quarantined (RUN/quarantine/features.parquet) or "
                    "its modality has no encoder",
                )
            t = self._shard(row["shard"]).get(row["tensor"])
            if t is None or tensor_checksum(t) != row["checksum"]:
                raise InputDataError(
                    f"{modality} features of {sha!r} are corrupt",
                    hint="re-run `mmdata features --force`",
                )
            out.append(t)
        if len({tuple(t.shape) for t in out}) > 1:
            raise InputDataError(
                f"{modality} features have different shapes "
                f"{sorted({tuple(t.shape) for t in out})}: they cannot be stacked",
                hint="load items of one stream (or one clip length) at a time",
            )
        return torch.stack(out) if out else torch.empty(0)


def load_features(source: Path | str, sha256s: Sequence[str], modality: str) -> torch.Tensor:
    """Features of ``sha256s`` from a run dir, ``RUN/features`` or its ``index.parquet``.

    >>> load_features("/nonexistent", ["00"], "image")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mmdata.errors.InputDataError: no features index at '/nonexistent'...
    """
    return FeatureStore(source).load(sha256s, modality)

"""The ingest stage: every configured source through its connector into normalized streams.

``RUN/ingest/streams/<stream_id>.parquet`` holds one stream each (see :mod:`mmdata.streams`),
``RUN/ingest/streams.json`` indexes them (rows, time range, segments, flags, metadata), and
``RUN/quarantine/ingest.parquet`` holds every refused file, failed item and rejected row.
Counts reconcile: units in = rows out + units quarantined.

Items are read in jobs (up to 64 consecutive items of one source) on the configured engine
(:mod:`mmdata.engine`): a job travels as JSON to :func:`ingest_job` and its result comes
back as JSON, and the results are used in job order, so the files are byte-identical on
any engine. A job that raises as a whole quarantines each of its items with the reason.

>>> from mmdata.ingest import IngestSource  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import connectors
from connectors.base import Connector, SourceContext, SourceItem
from mmdata import atomic
from mmdata.config import PipelineConfig, config_hash, validation_problems
from mmdata.engine import Engine, JobFailure, in_order, make_engine
from mmdata.engine.local import LocalEngine
from mmdata.errors import ConfigError
from mmdata.quarantine import QuarantineLog
from mmdata.rundir import RunDir, StageCounts
from mmdata.runner import ProgressFn, StageContext, StageOutcome, StageSpec, run_stage
from mmdata.stitch import finalize_stream
from mmdata.streams import ItemResult, JobParts, JobResult, PartInfo, PartSink, Reject

STREAMS_INDEX = "streams.json"


@dataclass(frozen=True)
class IngestSource:
    """One configured source, resolved: which connector, which options, which device."""

    asset_id: str
    device_id: str
    index: int
    connector: str
    path: str
    options: dict[str, Any]

    def context(self, cls: type[Connector]) -> SourceContext:
        """Validated connector context (raises ConfigError on bad options)."""
        try:
            opts = cls.Options.model_validate(self.options)
        except ValidationError as err:
            first, *rest = validation_problems(err)
            where = f"assets.{self.asset_id}.sources.{self.index}"
            raise ConfigError(
                "pipeline config",
                f"{where}.{first[0]}",
                first[1],
                first[2],
                more=[(f"{where}.{f}", v, a) for f, v, a in rest],
            ) from None
        return SourceContext(self.asset_id, self.device_id, self.index, self.path, opts)


def sources_of(config: PipelineConfig) -> list[IngestSource]:
    """The pipeline's sources in declaration order."""
    out = []
    for asset_id, asset in config.assets.items():
        for i, src in enumerate(asset.sources):
            opts = {k: v for k, v in (src.model_extra or {}).items()}
            out.append(IngestSource(asset_id, src.device or src.connector, i, src.connector,
                                    src.path, opts))  # fmt: skip
    return out


def stream_id(asset_id: str, device_id: str, suffix: str) -> str:
    """``<asset>.<device>.<suffix>``: stable, file-name safe."""
    raw = f"{asset_id}.{device_id}.{suffix}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)


@dataclass
class SourceRun:
    """What ingesting one source produced (before finalizing streams)."""

    source: IngestSource
    refused: list[Reject] = field(default_factory=list)
    results: list[ItemResult] = field(default_factory=list)
    parts: list[tuple[str, PartInfo]] = field(default_factory=list)


def list_source(source: IngestSource) -> tuple[list[SourceItem], list[Reject]]:
    """List a source's items; refused entries become rejects."""
    cls = connectors.load(source.connector)
    conn = cls(source.context(cls))
    items: list[SourceItem] = []
    refused: list[Reject] = []
    for entry in conn.list_items():
        if isinstance(entry, SourceItem):
            items.append(entry)
        else:
            uri, reason = entry
            refused.append(Reject(uri, None, reason, "RefusedPath"))
    return items, refused


def read_items(source: IngestSource, items: list[SourceItem], part_dir: str, job: int) -> JobResult:
    """Read a batch of consecutive items through their connector (a worker-process job).

    Each item is isolated: a failure quarantines that item and drops only its rows.
    """
    cls = connectors.load(source.connector)
    ctx = source.context(cls)
    conn = cls(ctx)
    opts = ctx.options
    storage = dict(getattr(opts, "storage_options", {}) or {})
    max_bytes = int(getattr(opts, "max_file_mb", 4096)) * 1024 * 1024
    parts = JobParts(Path(part_dir), job)
    results = []
    for item in items:
        sink = PartSink(item, Path(part_dir), storage, max_bytes)
        try:
            conn.read(item, sink)
            result = sink.commit()
        except Exception as err:  # any failure of one item quarantines that item only
            results.append(sink.abort(err))
            continue
        if result.parts:  # the item wrote its own parts: keep the batched run contiguous
            parts.close_run()
        parts.add(sink)
        results.append(result)
    parts.close_run()
    return JobResult(results, parts.done)


def _jobs(items: list[SourceItem], max_items: int = 64, max_bytes: int = 64 << 20) -> list[
    list[SourceItem]
]:  # fmt: skip
    """Consecutive items grouped into jobs of at most ``max_items`` / ``max_bytes``."""
    jobs: list[list[SourceItem]] = []
    size = 0
    for item in items:
        if not jobs or len(jobs[-1]) >= max_items or size + item.size > max_bytes:
            jobs.append([])
            size = 0
        jobs[-1].append(item)
        size += item.size
    return jobs


Job = tuple[IngestSource, list[SourceItem], str, int]  # source, items, part dir, job number


def ingest_job(job: str) -> str:
    """:func:`read_items` with JSON in and out (an engine's job; nothing is pickled).

    >>> src = IngestSource("a", "d", 0, "notes", "/nowhere/*.jsonl", {})
    >>> out = json.loads(ingest_job(job_to_json((src, [], "/tmp/parts", 0))))
    >>> out["items"], out["parts"]
    ([], [])
    """
    source, items, part_dir, number = job_from_json(job)
    res = read_items(source, items, part_dir, number)
    return json.dumps({"items": [_item_dict(r) for r in res.items],
                       "parts": [[suffix, _part_dict(p)] for suffix, p in res.parts]})  # fmt: skip


def job_to_json(job: Job) -> str:
    """One ingest job as the JSON :func:`ingest_job` reads.

    >>> src = IngestSource("a", "d", 0, "notes", "n.jsonl", {})
    >>> job_from_json(job_to_json((src, [SourceItem("n.jsonl", 3)], "p", 7)))[1:]
    ([SourceItem(uri='n.jsonl', size=3, seq=0, fingerprint='')], 'p', 7)
    """
    source, items, part_dir, number = job
    return json.dumps({"source": asdict(source),
                       "items": [[i.uri, i.size, i.seq, i.fingerprint] for i in items],
                       "part_dir": part_dir, "job": number})  # fmt: skip


def job_from_json(text: str) -> Job:
    """The job :func:`job_to_json` wrote."""
    d = json.loads(text)
    items = [SourceItem(*i) for i in d["items"]]
    return IngestSource(**d["source"]), items, str(d["part_dir"]), int(d["job"])


def result_from_json(text: str) -> JobResult:
    """The :class:`~mmdata.streams.JobResult` that :func:`ingest_job` returned as JSON.

    >>> result_from_json('{"items": [], "parts": []}')
    JobResult(items=[], parts=[])
    """
    d = json.loads(text)
    return JobResult([_item_result(i) for i in d["items"]],
                     [(str(suffix), PartInfo(**p)) for suffix, p in d["parts"]])  # fmt: skip


# Explicit converters, not dataclasses.asdict: its deep copies cost 100 us an item.
def _part_dict(p: PartInfo) -> dict[str, Any]:
    return {"path": p.path, "uri": p.uri, "rows": p.rows, "modality": p.modality,
            "meta": p.meta, "seq": p.seq}  # fmt: skip


def _item_dict(r: ItemResult) -> dict[str, Any]:
    return {"uri": r.uri, "seq": r.seq, "units_in": r.units_in, "units_out": r.units_out,
            "parts": {k: _part_dict(p) for k, p in r.parts.items()},
            "rejects": [[x.uri, x.locator, x.reason, x.error_class, x.units] for x in r.rejects],
            "flags": r.flags, "failed": r.failed}  # fmt: skip


def _item_result(d: dict[str, Any]) -> ItemResult:
    return ItemResult(
        d["uri"], d["seq"], d["units_in"], d["units_out"],
        {suffix: PartInfo(**p) for suffix, p in d["parts"].items()},
        [Reject(*r) for r in d["rejects"]], dict(d["flags"]), d["failed"],
    )  # fmt: skip


def failed_job(items: list[SourceItem], failure: JobFailure) -> JobResult:
    """A job that raised as a whole: each of its items quarantined with the reason.

    >>> res = failed_job([SourceItem("a.csv", 1)], JobFailure("OSError", "disk full"))
    >>> res.items[0].rejects[0].reason
    'reading the job holding this item failed (OSError): disk full'
    """
    why = f"reading the job holding this item failed ({failure.error_class}): {failure.message}"
    return JobResult([ItemResult(i.uri, i.seq, units_in=1, failed=True,
                                 rejects=[Reject(i.uri, None, why, failure.error_class)])
                      for i in items], [])  # fmt: skip


def _run_jobs(jobs: list[Job], workers: int, on_done: Callable[[JobResult], None],
              engine: Engine) -> list[JobResult]:  # fmt: skip
    """Read the jobs on ``engine``; results in job order (the same on any engine)."""

    def result(k: int, res: str | JobFailure) -> JobResult:
        if isinstance(res, JobFailure):
            return failed_job(jobs[k][1], res.check(f"ingest job {k}"))
        return result_from_json(res)

    done = engine.map(ingest_job, [job_to_json(j) for j in jobs], name="ingest", workers=workers)
    return in_order(((k, result(k, res)) for k, res in done), len(jobs),
                    lambda _k, res, _n: on_done(res))  # fmt: skip


@dataclass
class IngestOptions:
    """Engine knobs of the ingest stage."""

    workers: int = 1
    clock_jump_ms: int = 1000
    row_group_mb: int = 4
    parallel_min_mb: int = 256


def ingest_sources(
    sources: Iterable[IngestSource],
    out_dir: Path,
    quarantine: QuarantineLog,
    options: IngestOptions,
    progress: ProgressFn | None = None,
    engine: Engine | None = None,
) -> StageCounts:
    """Ingest ``sources`` into ``out_dir`` (streams/ + streams.json); return the counts.

    Items are read in jobs on ``engine`` (default: local). Jobs write their part files under
    ``out_dir`` and name them in their results: on Ray nodes without the driver's files, a
    run on storage stages them (:mod:`mmdata.engine.staging`).
    """
    part_root = out_dir / "_parts"
    runs: list[SourceRun] = []
    jobs: list[Job] = []
    total_items = 0
    for src in sources:
        items, refused = list_source(src)
        runs.append(SourceRun(src, refused))
        total_items += len(items)
        for batch in _jobs(items):
            jobs.append((src, batch, str(part_root / f"s{src.asset_id}-{src.index}"), len(jobs)))
    done = 0

    def tick(r: JobResult) -> None:
        nonlocal done
        done += len(r.items)
        if progress is not None and r.items:
            progress(f"ingest: {Path(r.items[-1].uri).name}", done, total_items)

    # Starting worker processes costs about half a second: not worth it for small inputs.
    total_bytes = sum(i.size for _, batch, _, _ in jobs for i in batch)
    workers = options.workers if total_bytes > options.parallel_min_mb * 1024 * 1024 else 1
    results = _run_jobs(jobs, workers, tick, engine or LocalEngine())
    by_source = {(r.source.asset_id, r.source.index): r for r in runs}
    for (src, _, _, _), res in zip(jobs, results, strict=True):
        run = by_source[(src.asset_id, src.index)]
        run.results.extend(res.items)
        run.parts.extend(res.parts)

    units_in = units_out = quarantined = 0
    index: list[dict[str, Any]] = []
    streams_dir = out_dir / "streams"
    streams_dir.mkdir(parents=True, exist_ok=True)
    for run in runs:
        src = run.source
        for rej in run.refused:
            _quarantine(quarantine, rej)
            units_in += 1
            quarantined += 1
        parts: dict[str, list[PartInfo]] = {}
        source_flags: dict[str, int] = {}  # item flags apply to the source's streams
        for item in run.results:
            units_in += item.units_in
            for rej in item.rejects:
                _quarantine(quarantine, rej)
                quarantined += rej.units
            for suffix, part in item.parts.items():
                parts.setdefault(suffix, []).append(part)
            for k, v in item.flags.items():
                source_flags[k] = source_flags.get(k, 0) + v
        for suffix, part in run.parts:
            parts.setdefault(suffix, []).append(part)
        for suffix, plist in sorted(parts.items()):
            sid = stream_id(src.asset_id, src.device_id, suffix)
            path = streams_dir / f"{sid}.parquet"
            # Notes are events logged by people, often out of order: sort, never segment.
            jump_ns = 2**62 if plist[0].modality == "text" else options.clock_jump_ms * 1_000_000
            stats = finalize_stream(
                plist, path, {"stream_id": sid, "device_id": src.device_id},
                clock_jump_ns=jump_ns,
                row_group_bytes=options.row_group_mb * 1024 * 1024,
            )  # fmt: skip
            for rej in stats.rejects:
                _quarantine(quarantine, rej)
                quarantined += rej.units
            units_out += stats.rows
            meta: dict[str, Any] = {}
            for p in plist:
                meta.update({k: v for k, v in p.meta.items() if k != "sha256"})
            index.append({
                "stream_id": sid, "asset_id": src.asset_id, "device_id": src.device_id,
                "modality": plist[0].modality, "connector": src.connector,
                "source_index": src.index, "file": f"streams/{sid}.parquet",
                "rows": stats.rows, "items": len(plist),
                "ts_min_ns": stats.ts_min_ns, "ts_max_ns": stats.ts_max_ns,
                "segments": stats.segments,
                "flags": {**source_flags, **stats.flags}, "meta": meta,
            })  # fmt: skip
    shutil.rmtree(part_root, ignore_errors=True)
    atomic.write_json(out_dir / STREAMS_INDEX, {"schema_version": "mmdata.streams/1",
                                                 "streams": index})  # fmt: skip
    return StageCounts(in_=units_in, out=units_out, quarantined=quarantined)


def _quarantine(log: QuarantineLog, rej: Reject) -> None:
    message = rej.reason if rej.units == 1 else f"{rej.reason} ({rej.units} units)"
    log.record(rej.uri, rej.error_class, message, locator=rej.locator)


def inputs_fingerprint(sources: list[IngestSource]) -> str:
    """Fingerprint of every source's listing (uri + size + mtime/etag) and options."""
    listing = []
    for src in sources:
        items, refused = list_source(src)
        listing.append({
            "source": [src.asset_id, src.device_id, src.index, src.connector, src.path,
                       config_hash(src.options)],
            "items": [[i.uri, i.fingerprint] for i in items],
            "refused": [[r.uri, r.reason] for r in refused],
        })  # fmt: skip
    return config_hash({"listing": listing})


def run_ingest(
    run: RunDir,
    config: PipelineConfig,
    *,
    progress: ProgressFn | None = None,
    force: bool = False,
) -> StageOutcome:
    """Run the ingest stage of ``config`` in ``run`` (skipped when nothing changed)."""
    sources = sources_of(config)
    opts = IngestOptions(workers=config.ingest.workers, clock_jump_ms=config.ingest.clock_jump_ms,
                         row_group_mb=config.ingest.row_group_mb)  # fmt: skip
    spec = StageSpec(
        name="ingest",
        version="1",
        config={"assets": config.model_dump(mode="json")["assets"],
                "ingest": config.ingest.model_dump(mode="json")},
        inputs_fingerprint=inputs_fingerprint(sources),
    )  # fmt: skip

    def stage(ctx: StageContext) -> StageCounts:
        engine = make_engine(config, run)  # Ray stays up for the next stage
        return ingest_sources(sources, ctx.out_dir, ctx.quarantine, opts, ctx.progress, engine)

    return run_stage(run, spec, stage, progress=progress, force=force)


def read_index(ingest_dir: Path) -> list[dict[str, Any]]:
    """The stream index written by ingest."""
    doc = json.loads((ingest_dir / STREAMS_INDEX).read_text(encoding="utf-8"))
    return list(doc["streams"])

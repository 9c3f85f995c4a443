"""The aligner: ingested streams + clock models → windows → Parquet records.

Per asset, reference time is processed in chunks of ``align.chunk_s`` (memory stays flat as
the input grows): each stream's rows for the chunk are read by row group, mapped to
reference time with the device's clock model, cut into the chunk's windows with
``searchsorted`` (no resampling: each modality keeps its own rate), and written as records
(:mod:`mmdata.records`) to ``RUN/records/asset_id=<a>/date=<YYYY-MM-DD>/part-NNNNN.parquet``.

Audio files with a sidecar transcript (``<stem>.transcript.json`` or ``<stem>.vtt``) give
their records a ``transcript``: the words overlapping the record's audio, placed on the
file's samples through the device's clock model (:class:`~mmdata.stream_reader.
TranscriptCache`, each sidecar read once per job), timed from the record's first audio
sample in the record's WAV (a word straddling the audio's edge is clipped to it).

Counts: windows planned + sidecar transcripts rejected in = records out + windows dropped
(crossing a break, empty, or missing a required modality) + sidecars rejected (malformed:
their audio's records align without a transcript), each quarantined with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from mmdata import atomic
from mmdata.assemble import RecordBuilder
from mmdata.config import AlignConfig, PipelineConfig, config_hash
from mmdata.engine import Engine, JobFailure, in_order, make_engine
from mmdata.engine.local import LocalEngine
from mmdata.records import RECORD_SCHEMA_VERSION, RecordWriter
from mmdata.rundir import RunDir, StageCounts
from mmdata.runner import ProgressFn, StageContext, StageOutcome, StageSpec, run_stage
from mmdata.stream_reader import (
    DENSE,
    AudioChunk,
    Chunk,
    ClockInfo,
    StreamReader,
    TranscriptCache,
    audio_frames,
    load_readers,
    read_clocks,
    sidecar_digests,
    sorted_chunk,
)
from mmdata.timebase import NS_PER_MS, NS_PER_S, ClockModel
from mmdata.windows import plan_windows


@dataclass
class AssetResult:
    """What aligning one asset produced."""

    asset_id: str
    planned: int = 0
    written: int = 0
    dropped: list[tuple[int, int, str]] = field(default_factory=list)  # start, end, reason
    files: list[str] = field(default_factory=list)
    transcribed: int = 0  # records written with transcript words
    bad_transcripts: dict[str, tuple[str, str]] = field(default_factory=dict)  # sidecar: uri, why


def _extent(readers: list[StreamReader]) -> tuple[int, int]:
    use = [r for r in readers if r.modality in DENSE] or readers
    lo = min(m.to_reference(int(r.entry["ts_min_ns"])) for r in use
             for m in [r.clock.model, *r.clock.segments.values()])  # fmt: skip
    hi = max(m.to_reference(int(r.entry["ts_max_ns"])) for r in use
             for m in [r.clock.model, *r.clock.segments.values()])  # fmt: skip
    return int(lo), int(hi) + 1


def asset_layout(readers: list[StreamReader], max_gap_ns: int) -> list[tuple[int, int]]:
    """Breaks of an asset's dense streams, in reference time, read row group by row group.

    Only time columns are read and one row of state is carried between groups, so memory
    does not grow with the length of the input.
    """
    breaks: set[tuple[int, int]] = set()
    for r in readers:
        if r.modality not in DENSE:
            continue
        pf = pq.ParquetFile(r.path)
        cols = ["ts_ns", "segment"] + (["n_frames", "sample_rate"] if r.modality == "audio" else [])
        prev_end: int | None = None
        prev_seg: int | None = None
        for g in range(pf.metadata.num_row_groups):
            t = pf.read_row_group(g, columns=cols)
            seg = t.column("segment").to_numpy()
            start = r.clock.to_reference(t.column("ts_ns").to_numpy(), seg)
            if r.modality == "audio":  # a row is a chunk: it ends where its last frame ends
                dur = (t.column("n_frames").to_numpy().astype(np.int64) * NS_PER_S
                       // t.column("sample_rate").to_numpy().astype(np.int64))  # fmt: skip
                end = start + dur
            else:
                end = start
            if prev_end is not None:
                start = np.concatenate([[prev_end], start])
                end = np.concatenate([[prev_end], end])
                seg = np.concatenate([[prev_seg], seg])
            gap = start[1:] - end[:-1] > max_gap_ns
            for i in np.flatnonzero(gap | (seg[1:] != seg[:-1])):
                a, b = int(end[i]), int(start[i + 1])
                breaks.add((min(a, b), max(a, b)))
            prev_end, prev_seg = int(end[-1]), int(seg[-1])
    return sorted(breaks)


def partitions(extent: tuple[int, int], cfg: AlignConfig) -> list[tuple[int, int]]:
    """The asset × time partitions of an asset: ``partition_s`` each, on the epoch grid."""
    lo, hi = extent
    step = cfg.partition_s * NS_PER_S
    first = (lo // step) * step
    return [(a, a + step) for a in range(first, hi, step)]


class AssetAligner:
    """Aligns one asset's streams over a range of reference time, chunk by chunk.

    ``breaks`` are the asset's breaks (gaps and clock jumps in dense streams) over its whole
    extent, found beforehand by :func:`asset_layout`, so every partition of the asset
    numbers spans and drops break-crossing windows the same way.
    """

    def __init__(self, asset_id: str, readers: list[StreamReader], cfg: AlignConfig,
                 shaping: str, anchors: np.ndarray | None) -> None:  # fmt: skip
        self.asset_id = asset_id
        self.readers = readers
        self.cfg = cfg
        self.shaping = shaping
        self.anchors = anchors
        self.breaks: list[tuple[int, int]] = []
        self.transcripts = TranscriptCache()

    def extent(self) -> tuple[int, int]:
        """Reference-time extent of the asset's data (dense streams if any, else all)."""
        return _extent(self.readers)

    def run(self, writer: RecordWriter, part: tuple[int, int] | None = None,
            breaks: list[tuple[int, int]] | None = None) -> AssetResult:  # fmt: skip
        """Align the windows starting in ``part`` (default: the whole asset) into ``writer``."""
        res = AssetResult(self.asset_id)
        if not self.readers:
            return res
        lo, hi = self.extent()
        self.breaks = sorted(breaks) if breaks is not None else asset_layout(
            self.readers, self.cfg.max_gap_ms * NS_PER_MS)  # fmt: skip
        step = self.cfg.chunk_s * NS_PER_S
        p0, p1 = part if part is not None else ((lo // step) * step, hi)
        w = self.cfg.window
        length = (w.length_ms if w.mode != "event" else w.pre_ms + w.post_ms) * NS_PER_MS
        c0 = p0
        while c0 < min(p1, hi):
            c1 = min(c0 + step, p1)
            self._chunk(c0, c1, length, lo, hi, writer, res)
            c0 = c1
        res.bad_transcripts = dict(sorted(self.transcripts.bad.items()))
        return res

    def _chunk(self, c0: int, c1: int, length: int, lo: int, hi: int,
               writer: RecordWriter, res: AssetResult) -> None:  # fmt: skip
        w = self.cfg.window
        pad = max(length, (w.pre_ms + w.post_ms) * NS_PER_MS) + self.cfg.max_gap_ms * NS_PER_MS
        chunks = self._read(c0 - pad, c1 + pad)
        anchors = None
        if self.anchors is not None:
            anchors = self.anchors[(self.anchors >= c0) & (self.anchors < c1)]
        plan = plan_windows((max(lo, c0), min(hi, c1)), w, self.breaks, anchors)
        if w.mode != "event":  # windows belong to the chunk holding their start
            keep = (plan.starts >= c0) & (plan.starts < c1)
            plan.starts, plan.ends, plan.span = plan.starts[keep], plan.ends[keep], plan.span[keep]
        dropped = self._dropped_at_breaks(c0, c1, lo, hi)
        for s, e in dropped:
            res.dropped.append((s, e, "window crosses a break (gap or clock jump)"))
        res.planned += plan.starts.size + len(dropped)
        builder = RecordBuilder(self.asset_id, self.shaping, self.cfg, chunks)
        for k in range(plan.starts.size):
            rec, reason = builder.build(int(plan.starts[k]), int(plan.ends[k]), int(plan.span[k]))
            if rec is None:
                res.dropped.append((int(plan.starts[k]), int(plan.ends[k]), reason))
            else:
                writer.add(rec)
                res.written += 1
                res.transcribed += bool(rec["transcript"])

    def _dropped_at_breaks(self, c0: int, c1: int, lo: int, hi: int) -> list[tuple[int, int]]:
        """Grid windows starting in [c0, c1) that would cross a break."""
        w = self.cfg.window
        if w.mode == "event" or not self.breaks:
            return []
        full = plan_windows((max(lo, c0), min(hi, c1)), w, [])
        out = []
        for s, e in zip(full.starts.tolist(), full.ends.tolist(), strict=True):
            if c0 <= s < c1 and any(s < max(b, a + 1) and e > a for a, b in self.breaks):
                out.append((s, e))
        return out

    def _read(self, ref_lo: int, ref_hi: int) -> list[Chunk]:
        out: list[Chunk] = []
        for r in self.readers:
            c = r.clock
            models = [c.model, *c.segments.values()]
            lo = min(m.to_device(ref_lo) for m in models) - 1
            hi = max(m.to_device(ref_hi) for m in models) + 1
            table = r.read(lo, hi)
            seg = table.column("segment").to_numpy() if table.num_rows else None
            if r.modality == "audio":
                words = self.transcripts.words(r, table)
                if "source_locator" in table.column_names:  # provenance keeps device ranges
                    table = table.drop_columns(["source_locator"])
                dev, samples, rate, ch = audio_frames(table)
                rows = table.column("ts_ns").to_numpy()
                base = sorted_chunk(r, table, c.to_reference(rows, seg))
                n = table.column("n_frames").to_numpy() if table.num_rows else np.zeros(0, int)
                frame_seg = np.repeat(seg, n) if seg is not None else None
                out.append(AudioChunk(
                    r, c.to_reference(dev, frame_seg), base.table, base.uri_codes,
                    base.uris, base.shas, base.dev_ts, base.locators, samples=samples,
                    rate=rate, channels=ch, row_ref=base.ref_ts, words=words,
                ))  # fmt: skip
            else:
                ts = table.column("ts_ns").to_numpy()
                out.append(sorted_chunk(r, table, c.to_reference(ts, seg)))
        return out


def _job_clocks(job: dict[str, Any]) -> dict[str, ClockInfo]:
    return {
        d: ClockInfo(ClockModel(**c["model"]), c["uncertain"], c["exceeds"],
                     {int(k): ClockModel(**v) for k, v in c.get("segments", {}).items()})
        for d, c in job["clocks"].items()
    }  # fmt: skip


def align_asset(job: dict[str, Any]) -> AssetResult:
    """Align one asset × time partition (a process-pool job; plain data in and out).

    ``job["part"]`` is ``[start_ns, end_ns)`` and ``job["part_index"]`` names its files;
    without them the whole asset is one partition.
    """
    cfg = AlignConfig.model_validate(job["align"])
    readers = load_readers(Path(job["ingest_dir"]), _job_clocks(job)).get(job["asset_id"], [])
    anchors = _anchors(readers, cfg)
    index = int(job.get("part_index", 0))
    writer = RecordWriter(Path(job["out_dir"]), cfg.records_per_group, prefix=f"part-{index:05d}")
    part = tuple(job["part"]) if job.get("part") else None
    breaks = [tuple(b) for b in job["breaks"]] if "breaks" in job else None
    try:
        aligner = AssetAligner(job["asset_id"], readers, cfg, job["shaping"], anchors)
        res = aligner.run(writer, part, breaks)
    finally:
        writer.close()
    res.files = writer.files
    return res


def plan_jobs(base: dict[str, Any], ingest_dir: Path, clocks: dict[str, ClockInfo],
              cfg: AlignConfig) -> list[dict[str, Any]]:  # fmt: skip
    """One job per asset × time partition, with the asset's breaks found once up front."""
    jobs = []
    for asset, readers in sorted(load_readers(ingest_dir, clocks).items()):
        breaks = asset_layout(readers, cfg.max_gap_ms * NS_PER_MS)
        for i, part in enumerate(partitions(_extent(readers), cfg)):
            jobs.append({**base, "asset_id": asset, "part": list(part), "part_index": i,
                         "breaks": [list(b) for b in breaks]})  # fmt: skip
    return jobs


def _anchors(readers: list[StreamReader], cfg: AlignConfig) -> np.ndarray | None:
    on = cfg.window.on if cfg.window.mode == "event" else None
    if on is None:
        return None
    modality = {"notes": "text", "frames": "image", "labels": "labels"}[on]
    out = []
    for r in readers:
        if r.modality == modality:
            t = pq.read_table(r.path, columns=["ts_ns", "segment"])
            out.append(r.clock.to_reference(t.column(0).to_numpy(), t.column(1).to_numpy()))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


def run_assets(jobs: list[dict[str, Any]], workers: int,
               on_done: Callable[[AssetResult], None],
               engine: Engine | None = None) -> list[AssetResult]:  # fmt: skip
    """Align partitions on ``engine`` (default: local, a spawn pool when ``workers > 1``).

    A partition whose job raises comes back as one dropped item carrying the reason (the
    stage quarantines it), and the files it may have written are removed.
    """
    engine = engine or LocalEngine()
    texts = [json.dumps(j) for j in jobs]
    done = engine.map(align_job, texts, name="align", workers=workers)

    def result(k: int, res: str | JobFailure) -> AssetResult:
        if isinstance(res, JobFailure):
            return _failed_partition(jobs[k], res.check(f"align job {k}"))
        return _result_of(res)

    return in_order(((k, result(k, res)) for k, res in done), len(jobs),
                    lambda _k, res, _n: on_done(res))  # fmt: skip


def align_job(job: str) -> str:
    """:func:`align_asset` with JSON in and out (an engine's job)."""
    return json.dumps(asdict(align_asset(json.loads(job))))


def _result_of(text: str) -> AssetResult:
    d = json.loads(text)
    return AssetResult(
        d["asset_id"], d["planned"], d["written"], [tuple(x) for x in d["dropped"]],
        d["files"], d["transcribed"], {k: tuple(v) for k, v in d["bad_transcripts"].items()},
    )  # fmt: skip


def _failed_partition(job: dict[str, Any], failure: JobFailure) -> AssetResult:
    index = int(job.get("part_index", 0))
    asset_dir = Path(job["out_dir"]) / f"asset_id={job['asset_id']}"
    for pattern in (f"part-{index:05d}.parquet", f"part-{index:05d}-*.parquet"):
        for path in asset_dir.glob(f"date=*/{pattern}"):
            path.unlink()
    start, end = job["part"] if job.get("part") else (0, 0)
    why = f"aligning this partition failed ({failure.error_class}): {failure.message}"
    return AssetResult(job["asset_id"], planned=1, dropped=[(start, end, why)])


def _merge(results: list[AssetResult]) -> list[AssetResult]:
    """Partition results → one per asset (in partition order)."""
    by_asset: dict[str, AssetResult] = {}
    for r in results:
        m = by_asset.setdefault(r.asset_id, AssetResult(r.asset_id))
        m.planned += r.planned
        m.written += r.written
        m.dropped.extend(r.dropped)
        m.files.extend(r.files)
        m.transcribed += r.transcribed
        m.bad_transcripts.update(r.bad_transcripts)
    return [by_asset[a] for a in sorted(by_asset)]


def shaping_hash(config: PipelineConfig) -> str:
    """Hash of the config that shapes records (window and join rules)."""
    return config_hash(config.align.model_dump(
        mode="json", exclude={"workers", "chunk_s", "partition_s"}))  # fmt: skip


def write_index(out_dir: Path, results: list[AssetResult]) -> None:
    """``records/_index.json``: files per asset and counts."""
    atomic.write_json(out_dir / "_index.json", {
        "schema_version": RECORD_SCHEMA_VERSION,
        "assets": {r.asset_id: {"records": r.written, "dropped": len(r.dropped),
                                "files": r.files, "transcribed": r.transcribed,
                                "bad_transcripts": sorted(r.bad_transcripts)}
                   for r in results},
    })  # fmt: skip


def run_align(
    run: RunDir, config: PipelineConfig, *, progress: ProgressFn | None = None,
    force: bool = False,
) -> StageOutcome:  # fmt: skip
    """The ``records`` stage: align every asset of the ingested run into ``RUN/records``."""
    ingest_dir, sync_dir = run.stage_path("ingest"), run.stage_path("sync")
    clocks = read_clocks(sync_dir)
    upstream = [run.manifest.stages[s].fingerprint for s in ("ingest", "sync")
                if s in run.manifest.stages]  # fmt: skip
    inputs: dict[str, Any] = {"upstream": upstream}
    sidecars = sidecar_digests(ingest_dir) if (ingest_dir / "streams.json").is_file() else {}
    if sidecars:  # absent without sidecars: fingerprints of runs without them are unchanged
        inputs["transcripts"] = sidecars
    spec = StageSpec(name="records", version="1",
                     config=config.align.model_dump(mode="json"),
                     inputs_fingerprint=config_hash(inputs))  # fmt: skip

    def stage(ctx: StageContext) -> StageCounts:
        base = {
            "align": config.align.model_dump(mode="json"),
            "clocks": {d: {"model": c.model.model_dump(), "uncertain": c.uncertain,
                           "exceeds": c.exceeds_tolerance,
                           "segments": {str(k): v.model_dump() for k, v in c.segments.items()}}
                       for d, c in clocks.items()},
            "ingest_dir": str(ingest_dir), "out_dir": str(ctx.out_dir),
            "shaping": shaping_hash(config),
        }  # fmt: skip
        jobs = plan_jobs(base, ingest_dir, clocks, config.align)
        done = 0

        def tick(r: AssetResult) -> None:
            nonlocal done
            done += 1
            ctx.report(f"align: {r.asset_id}", done, len(jobs))

        engine = make_engine(config, run)
        results = _merge(run_assets(jobs, config.align.workers, tick, engine))
        bad: dict[str, tuple[str, str]] = {}
        for r in results:
            for start, end, reason in r.dropped:
                ctx.quarantine.record(f"asset:{r.asset_id}", "WindowDropped", reason,
                                      locator=f"window {start}-{end}")  # fmt: skip
            bad.update(r.bad_transcripts)
        for sidecar, (audio, why) in sorted(bad.items()):
            ctx.quarantine.record(sidecar, "InputDataError", (
                f"transcript {Path(sidecar).name!r} of {audio!r} is unusable: {why}; the "
                "audio's records are aligned without a transcript (fix or remove the sidecar "
                "and re-run align)"), locator=f"sidecar of {audio}")  # fmt: skip
        if bad:
            ctx.report(f"align: {len(bad)} sidecar transcript(s) rejected", done, len(jobs))
        write_index(ctx.out_dir, results)
        planned = sum(r.planned for r in results)
        written = sum(r.written for r in results)
        return StageCounts(in_=planned + len(bad), out=written,
                           quarantined=planned - written + len(bad))  # fmt: skip

    return run_stage(run, spec, stage, progress=progress, force=force)

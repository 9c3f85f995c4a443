"""The scrub stage: ``RUN/records`` → ``RUN/scrubbed`` (same layout and schema) + ``RUN/audit``.

Per records file, only the columns that can hold PII are touched — ``text``, ``image``,
``frames``, ``audio``, ``transcript``, ``flags`` — the sensor values pass through as Arrow
buffers. Notes are scrubbed in one batch per file; every frame is scrubbed (faces, OCR'd
text, metadata) and written inline, so scrubbed records never point back at the raw
camera files; audio with a word-timed transcript has its PII spans muted, audio with speech
but no transcript is flagged ``pii_unchecked`` (or dropped, per config).

Every finding becomes one audit row (no raw PII: keyed hashes only).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmdata import atomic
from mmdata.config import PipelineConfig, ScrubConfig, config_hash
from mmdata.engine import JobFailure, in_order, make_engine
from mmdata.errors import InputDataError, StageError
from mmdata.quarantine import QuarantineLog, QuarantineRow
from mmdata.records import RECORD_SCHEMA
from mmdata.rundir import RunDir, StageCounts
from mmdata.runner import ProgressFn, StageContext, StageOutcome, StageSpec, run_stage
from mmdata.scrub.audit import AuditRow, AuditWriter
from mmdata.scrub.findings import Finding
from mmdata.scrub.keys import keyed_hash, load_key

Detect = Callable[[str, str | None], list[Finding]]

_TOUCHED = ("text", "image", "frames", "audio", "transcript", "flags")
SCRUB_CONFIG = "_scrub_config.json"  # the scrub config (no secrets) that `mmdata audit` reuses
SCANNED_FILE = "scanned_frames.parquet"
_SCANNED_SCHEMA = pa.schema([("frame_sha256", pa.string()), ("pixels_changed", pa.bool_()),
                             ("config_hash", pa.string())])  # fmt: skip


def write_scanned(path: Path, scanned: dict[str, bool], cfg_hash: str) -> None:
    """Every frame the stage wrote (by sha256) and whether its pixels were changed.

    ``mmdata audit`` re-scans only frames whose pixels the scrubber changed: the others are
    exactly the pixels the same detectors (same config hash) already found nothing to redact
    in, so a re-scan would repeat the same computation for the same answer.
    """
    keys = sorted(scanned)
    table = pa.table({"frame_sha256": keys, "pixels_changed": [scanned[k] for k in keys],
                      "config_hash": [cfg_hash] * len(keys)}, schema=_SCANNED_SCHEMA)  # fmt: skip
    atomic.write_parquet(path, table)


def read_scanned(path: Path, cfg_hash: str) -> dict[str, bool]:
    """:func:`write_scanned`'s table for ``cfg_hash`` (empty when missing or of another config)."""
    if not path.is_file():
        return {}
    rows = pq.read_table(path).to_pylist()
    return {r["frame_sha256"]: r["pixels_changed"] for r in rows if r["config_hash"] == cfg_hash}


class Scrubbers:
    """The detectors and scrubbers of one process, built once (models load slowly)."""

    def __init__(self, cfg: ScrubConfig, key: bytes) -> None:
        from mmdata.scrub.text import TextScrubber

        self.cfg = cfg
        self.key = key
        self.text = TextScrubber(cfg, key)

    def detect(self, text: str, lang: str | None) -> list[Finding]:
        """Findings in one text (used on OCR output and transcripts)."""
        return self.text.analyze([text], [lang])[0]


def _scrub_notes(s: Scrubbers, records: list[dict[str, Any]], audit: list[tuple[str, Finding]]
                 ) -> set[int]:  # fmt: skip
    """Scrub every note of ``records`` in one batch; return the records that failed."""
    where = [(i, j) for i, r in enumerate(records) for j, _ in enumerate(r["text"] or [])]
    texts = [records[i]["text"][j]["text"] or "" for i, j in where]
    langs = [records[i]["text"][j].get("lang") for i, j in where]
    failed: set[int] = set()
    for (i, j), out in zip(where, s.text.scrub_safe(texts, langs), strict=True):
        if isinstance(out, InputDataError):
            failed.add(i)
            continue
        new_text, findings = out
        records[i]["text"][j]["text"] = new_text
        for f in findings:
            audit.append((records[i]["record_id"], _with_field(f, f"text[{j}].text")))
    return failed


def _with_field(f: Finding, field: str) -> Finding:
    from dataclasses import replace

    return replace(f, field=field)


def _read_image(item: dict[str, Any]) -> bytes | None:
    if item.get("bytes"):
        return bytes(item["bytes"])
    path = item.get("path")
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise InputDataError(f"frame {path!r} cannot be read: {err.strerror}") from err


class _Frames:
    """Every distinct frame of a table, scrubbed once in shared OCR batches.

    A frame several windows share is scrubbed once; its findings go to the audit once, under
    the first record that keeps it (so a quarantined record cannot take them along).
    """

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.first_field: dict[str, str] = {}
        self.result: dict[str, Any] = {}  # sha256 -> ImageResult | InputDataError
        self.audited: set[str] = set()
        self.scanned: dict[str, bool] = {}  # output sha256 -> pixels changed

    def collect(self, rec: dict[str, Any]) -> list[str]:
        """Read the record's frames; return their hashes (raises for an unreadable one)."""
        items = [(fr, f"frames[{k}]") for k, fr in enumerate(rec["frames"] or [])]
        if rec.get("image"):
            items.append((rec["image"], "image"))
        keys = []
        for item, field in items:
            data = _read_image(item)
            if data is None:
                continue
            key = hashlib.sha256(data).hexdigest()
            self.data.setdefault(key, data)
            self.first_field.setdefault(key, field)
            keys.append(key)
        return keys

    def scrub(self, s: Scrubbers) -> None:
        """Scrub every collected frame not yet scrubbed, in OCR batches."""
        from mmdata.scrub.image import scrub_images
        from mmdata.scrub.ocr import BATCH_FRAMES

        todo = [k for k in self.data if k not in self.result]
        for i in range(0, len(todo), BATCH_FRAMES):
            keys = todo[i : i + BATCH_FRAMES]
            fields = [self.first_field[k] for k in keys]
            out = scrub_images([self.data[k] for k in keys], s.cfg.image, s.detect, s.key,
                               fields=fields)  # fmt: skip
            self.result.update(zip(keys, out, strict=True))
            for res in out:
                if not isinstance(res, InputDataError):
                    sha = hashlib.sha256(res.data).hexdigest()
                    self.scanned[sha] = self.scanned.get(sha, False) or res.pixels_changed
        self.data.clear()

    def apply(self, rec: dict[str, Any], audit: list[tuple[str, Finding]]) -> None:
        """Put the scrubbed frames into ``rec`` (raises the error of a frame that failed)."""
        from mmdata.scrub.image import ImageResult

        def one(item: dict[str, Any]) -> dict[str, Any]:
            data = _read_image(item)
            if data is None:
                return item
            res = self.result[hashlib.sha256(data).hexdigest()]
            assert isinstance(res, ImageResult)
            # An EXIF orientation is applied, so width and height may swap.
            return {**item, "bytes": res.data, "path": None, "width": res.width,
                    "height": res.height}  # fmt: skip

        for key in self.keys_of(rec):
            if isinstance(self.result[key], InputDataError):
                raise self.result[key]
        rec["frames"] = [one(fr) for fr in rec["frames"] or []]
        if rec.get("image"):  # the HF Image struct holds bytes and path only
            rec["image"] = {k: v for k, v in one(rec["image"]).items() if k in ("bytes", "path")}
        for key in self.keys_of(rec):
            if key not in self.audited:
                self.audited.add(key)
                audit.extend((rec["record_id"], f) for f in self.result[key].findings)

    def keys_of(self, rec: dict[str, Any]) -> list[str]:
        """Hashes of the record's frames, from its collected keys."""
        return rec.get("_frame_keys", [])


def _scrub_audio(s: Scrubbers, rec: dict[str, Any], audit: list[tuple[str, Finding]]) -> bool:
    """Scrub the record's audio; return False when the record must be dropped."""
    from mmdata.scrub.audio import scrub_audio

    audio = rec.get("audio")
    if not audio or not audio.get("bytes"):
        return True
    r = scrub_audio(bytes(audio["bytes"]), rec.get("transcript") or None, s.cfg.audio,
                    s.detect, s.key)  # fmt: skip
    rec["audio"] = {"bytes": r.wav_bytes_out, "path": None}
    rec["transcript"] = r.transcript_out.to_words() if r.transcript_out else []
    rec["flags"]["pii_unchecked"] = "pii_unchecked" in r.flags
    for f in r.findings:
        audit.append((rec["record_id"], f))
    return not r.drop


def scrub_table(s: Scrubbers, table: pa.Table, quarantine: QuarantineLog, source: str,
                scanned: dict[str, bool] | None = None
                ) -> tuple[pa.Table, list[tuple[str, Finding]], int]:  # fmt: skip
    """Scrub one records table; return it, its findings, and how many records were dropped.

    ``scanned`` (optional) receives the sha256 of every frame written → whether the scrubber
    changed its pixels (False: the detectors found nothing to redact in exactly these pixels).
    """
    cols = {c: table.column(c).to_pylist() for c in (*_TOUCHED, "record_id")}
    n = table.num_rows
    records = [{c: cols[c][i] for c in cols} for i in range(n)]
    audit: list[tuple[str, Finding]] = []
    failed = _scrub_notes(s, records, audit)
    keep = [True] * n
    frames = _Frames()

    def drop(i: int, error_class: str, message: str) -> None:
        keep[i] = False
        quarantine.record(source, error_class, message, item_id=records[i]["record_id"])

    for i, rec in enumerate(records):
        if i in failed:
            drop(i, "TextScrubError", "a note of this record could not be scrubbed (see the "
                 "stage log)")  # fmt: skip
            continue
        try:
            rec["_frame_keys"] = frames.collect(rec)
        except InputDataError as err:
            drop(i, type(err).__name__, err.message)
    frames.scrub(s)
    for i, rec in enumerate(records):
        if not keep[i]:
            continue
        try:
            if not _scrub_audio(s, rec, audit):
                drop(i, "PiiUnchecked", "speech without a transcript; "
                     "scrub.audio.untranscribed_speech is 'drop'")  # fmt: skip
                continue
            frames.apply(rec, audit)  # last: a dropped record must not claim frame findings
        except InputDataError as err:
            drop(i, type(err).__name__, err.message)
            continue
        rec["flags"]["scrubbed"] = True
    if scanned is not None:
        scanned.update(frames.scanned)
    dropped = {records[i]["record_id"] for i in range(n) if not keep[i]}
    audit = [(rid, f) for rid, f in audit if rid not in dropped]
    for c in _TOUCHED:
        field = RECORD_SCHEMA.field(c)
        table = table.set_column(table.column_names.index(c), field,
                                 pa.array([r[c] for r in records], field.type))  # fmt: skip
    if not all(keep):
        table = table.filter(pa.array(keep))
    return table, audit, n - sum(keep)


def scrub_file(job: str) -> str:
    """Scrub one records file into the stage folder (a worker's job; JSON in, JSON out).

    The job names the input file, the output file and the scrub config; the key is loaded
    here from the environment or key file, so it never travels between processes. Returns
    the counts, the quarantined records and the audit rows. Models load once per process.
    """
    spec = json.loads(job)
    cfg = ScrubConfig.model_validate(spec["config"])
    scrubbers = _scrubbers(cfg)
    table = pq.read_table(spec["input"])
    quarantine = QuarantineLog("scrubbed")
    scanned: dict[str, bool] = {}
    out, audit, _ = scrub_table(scrubbers, table, quarantine, spec["source"], scanned)
    target = Path(spec["output"])
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_parquet(target, out.replace_schema_metadata(RECORD_SCHEMA.metadata))
    writer = AuditWriter(spec["config_hash"], scrubbers.key)
    for record_id, finding in audit:
        writer.add(record_id, [finding])
    return json.dumps({
        "in": table.num_rows, "out": out.num_rows,
        "quarantine": [r.model_dump(mode="json") for r in quarantine.rows],
        "audit": [r.model_dump(mode="json") for r in writer.rows],
        "scanned": sorted(scanned.items()),
    })  # fmt: skip


_PROCESS_SCRUBBERS: dict[str, Scrubbers] = {}


def _scrubbers(cfg: ScrubConfig) -> Scrubbers:
    """This process's scrubbers for ``cfg`` (built on first use)."""
    h = config_hash(cfg.model_dump(mode="json"))
    if h not in _PROCESS_SCRUBBERS:
        _PROCESS_SCRUBBERS.clear()
        _PROCESS_SCRUBBERS[h] = Scrubbers(cfg, load_key(cfg.key_env, cfg.key_file))
    return _PROCESS_SCRUBBERS[h]


def run_scrub(run: RunDir, config: PipelineConfig, *, progress: ProgressFn | None = None,
              force: bool = False) -> StageOutcome:  # fmt: skip
    """The ``scrubbed`` stage (after ``records``): scrub every record, audit every finding.

    Records files are scrubbed by ``scrub.processes`` spawned processes (one file each at a
    time; each loads its own models), or in this process when it is 1.
    """
    from mmdata.scrub.audit import scrub_config_hash

    rec = run.manifest.stages.get("records")
    if rec is None or rec.status != "complete":
        raise StageError("scrub needs a completed records (align) stage in this run",
                         hint="run `mmdata align` first")  # fmt: skip
    key = load_key(config.scrub.key_env, config.scrub.key_file)
    cfg_hash = scrub_config_hash(config.scrub)
    spec = StageSpec(
        name="scrubbed", version="2", config=config.scrub,
        # The key shapes every pseudonym: a keyed hash of a constant marks a key change.
        inputs_fingerprint=config_hash({"records": rec.fingerprint,
                                        "key": keyed_hash(key, "mmdata-key-check")}),
    )  # fmt: skip
    records_dir = run.stage_path("records")
    files = sorted(records_dir.glob("asset_id=*/date=*/*.parquet"))

    def stage(ctx: StageContext) -> StageCounts:
        jobs = [json.dumps({
            "input": str(path), "output": str(ctx.out_dir / path.relative_to(records_dir)),
            "source": f"records/{path.relative_to(records_dir)}",
            "config": config.scrub.model_dump(mode="json"), "config_hash": cfg_hash,
        }) for path in files]  # fmt: skip
        results = _run_jobs(jobs, config, ctx)
        writer = AuditWriter(cfg_hash, key)
        n_in = n_out = 0
        for res in results:  # in file order: the audit is the same at any process count
            n_in += res["in"]
            n_out += res["out"]
            for row in res["quarantine"]:
                ctx.quarantine.rows.append(QuarantineRow.model_validate(row))
            writer.rows.extend(AuditRow.model_validate(r) for r in res["audit"])
        writer.write(run.root / "audit" / "findings.parquet")
        scanned: dict[str, bool] = {}
        for res in results:
            for sha, changed in res["scanned"]:
                scanned[sha] = scanned.get(sha, False) or changed
        write_scanned(run.root / "audit" / SCANNED_FILE, scanned, cfg_hash)
        atomic.write_json(ctx.out_dir / SCRUB_CONFIG, config.scrub.model_dump(mode="json"))
        return StageCounts(in_=n_in, out=n_out, quarantined=n_in - n_out)

    return run_stage(run, spec, stage, progress=progress, force=force)


def _run_jobs(jobs: list[str], config: PipelineConfig, ctx: StageContext
              ) -> list[dict[str, Any]]:  # fmt: skip
    """Run the jobs on ``config.engine``: ``scrub.processes`` spawned processes, or on Ray an
    actor pool of that size (each actor loads Presidio, spaCy and the detectors once)."""
    names = [Path(json.loads(j)["source"]).parent.parent.name for j in jobs]
    engine = make_engine(config, ctx.run)  # Ray stays up for the next stage
    done = engine.map(scrub_file, jobs, name="scrub", workers=config.scrub.processes,
                      actors=config.scrub.processes)  # fmt: skip
    results = in_order(done, len(jobs),
                       lambda k, _, n: ctx.report(f"scrub: {names[k]}", n, len(jobs)))  # fmt: skip
    return [_failed_file(job, res.check(f"scrub of {names[k]}")) if isinstance(res, JobFailure)
            else json.loads(res) for k, (job, res) in enumerate(zip(jobs, results, strict=True))
            ]  # fmt: skip


def _failed_file(job: str, failure: JobFailure) -> dict[str, Any]:
    """A records file whose scrub job raised: every record of it is quarantined."""
    spec = json.loads(job)
    try:
        ids: list[str | None] = pq.read_table(spec["input"], columns=["record_id"]
                                              ).column(0).to_pylist()  # fmt: skip
    except Exception:  # unreadable: the file is the one quarantined item
        ids = [None]
    log = QuarantineLog("scrubbed")
    for rid in ids:
        log.record(spec["source"], failure.error_class, "scrubbing this records file failed: "
                   f"{failure.message}", item_id=rid)  # fmt: skip
    return {"in": len(ids), "out": 0, "quarantine": [r.model_dump(mode="json") for r in log.rows],
            "audit": [], "scanned": []}  # fmt: skip

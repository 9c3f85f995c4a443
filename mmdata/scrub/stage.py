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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmdata import atomic
from mmdata.config import PipelineConfig, ScrubConfig, config_hash
from mmdata.errors import InputDataError, StageError
from mmdata.quarantine import QuarantineLog
from mmdata.records import RECORD_SCHEMA
from mmdata.rundir import RunDir, StageCounts
from mmdata.runner import ProgressFn, StageContext, StageOutcome, StageSpec, run_stage
from mmdata.scrub.findings import Finding
from mmdata.scrub.keys import keyed_hash, load_key

Detect = Callable[[str, str | None], list[Finding]]

_TOUCHED = ("text", "image", "frames", "audio", "transcript", "flags")
SCRUB_CONFIG = "_scrub_config.json"  # the scrub config (no secrets) that `mmdata audit` reuses


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


def _scrub_frames(s: Scrubbers, rec: dict[str, Any], audit: list[tuple[str, Finding]],
                  cache: dict[str, tuple[bytes, int, int]]) -> None:  # fmt: skip
    from mmdata.scrub.image import scrub_image

    def one(item: dict[str, Any], field: str) -> dict[str, Any]:
        data = _read_image(item)
        if data is None:
            return item
        key = hashlib.sha256(data).hexdigest()  # a frame seen by several windows: scrub once
        if key not in cache:
            result = scrub_image(data, s.cfg.image, s.detect, s.key, field=field)
            for f in result.findings:
                audit.append((rec["record_id"], f))
            cache[key] = (result.data, result.width, result.height)
        out, width, height = cache[key]
        # An EXIF orientation is applied, so width and height may swap.
        return {**item, "bytes": out, "path": None, "width": width, "height": height}

    rec["frames"] = [one(fr, f"frames[{k}]") for k, fr in enumerate(rec["frames"] or [])]
    if rec.get("image"):  # the HF Image struct holds bytes and path only
        rec["image"] = {
            k: v for k, v in one(rec["image"], "image").items() if k in ("bytes", "path")
        }


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


def scrub_table(s: Scrubbers, table: pa.Table, quarantine: QuarantineLog, source: str
                ) -> tuple[pa.Table, list[tuple[str, Finding]], int]:  # fmt: skip
    """Scrub one records table; return it, its findings, and how many records were dropped."""
    cols = {c: table.column(c).to_pylist() for c in (*_TOUCHED, "record_id")}
    n = table.num_rows
    records = [{c: cols[c][i] for c in cols} for i in range(n)]
    audit: list[tuple[str, Finding]] = []
    failed = _scrub_notes(s, records, audit)
    keep = [True] * n
    cache: dict[str, tuple[bytes, int, int]] = {}
    for i, rec in enumerate(records):
        if i in failed:
            keep[i] = False
            quarantine.record(source, "TextScrubError", "a note of this record could not be "
                              "scrubbed (see the stage log)", item_id=rec["record_id"])  # fmt: skip
            continue
        try:
            _scrub_frames(s, rec, audit, cache)
            keep[i] = _scrub_audio(s, rec, audit)
            if not keep[i]:
                quarantine.record(source, "PiiUnchecked", "speech without a transcript; "
                                  "scrub.audio.untranscribed_speech is 'drop'",
                                  item_id=rec["record_id"])  # fmt: skip
                continue
        except InputDataError as err:
            keep[i] = False
            quarantine.record(source, type(err).__name__, err.message, item_id=rec["record_id"])
            audit = [(rid, f) for rid, f in audit if rid != rec["record_id"]]
        rec["flags"]["scrubbed"] = True
    for c in _TOUCHED:
        field = RECORD_SCHEMA.field(c)
        table = table.set_column(table.column_names.index(c), field,
                                 pa.array([r[c] for r in records], field.type))  # fmt: skip
    if not all(keep):
        table = table.filter(pa.array(keep))
    return table, audit, n - sum(keep)


def run_scrub(run: RunDir, config: PipelineConfig, *, progress: ProgressFn | None = None,
              force: bool = False) -> StageOutcome:  # fmt: skip
    """The ``scrubbed`` stage (after ``records``): scrub every record, audit every finding."""
    from mmdata.scrub.audit import AuditWriter, scrub_config_hash

    rec = run.manifest.stages.get("records")
    if rec is None or rec.status != "complete":
        raise StageError("scrub needs a completed records (align) stage in this run",
                         hint="run `mmdata align` first")  # fmt: skip
    key = load_key(config.scrub.key_env, config.scrub.key_file)
    cfg_hash = scrub_config_hash(config.scrub)
    spec = StageSpec(
        name="scrubbed", version="1", config=config.scrub,
        # The key shapes every pseudonym: a keyed hash of a constant marks a key change.
        inputs_fingerprint=config_hash({"records": rec.fingerprint,
                                        "key": keyed_hash(key, "mmdata-key-check")}),
    )  # fmt: skip
    records_dir = run.stage_path("records")
    files = sorted(records_dir.glob("asset_id=*/date=*/*.parquet"))

    def stage(ctx: StageContext) -> StageCounts:
        scrubbers = Scrubbers(config.scrub, key)
        writer = AuditWriter(cfg_hash, key)
        n_in = n_out = 0
        for k, path in enumerate(files):
            rel = path.relative_to(records_dir)
            table = pq.read_table(path)
            n_in += table.num_rows
            out, audit, _ = scrub_table(scrubbers, table, ctx.quarantine, f"records/{rel}")
            for record_id, finding in audit:
                writer.add(record_id, [finding])
            target = ctx.out_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_parquet(target, out.replace_schema_metadata(RECORD_SCHEMA.metadata))
            n_out += out.num_rows
            ctx.report(f"scrub: {rel.parent.parent.name}", k + 1, len(files))
        writer.write(run.root / "audit" / "findings.parquet")
        atomic.write_json(ctx.out_dir / SCRUB_CONFIG, config.scrub.model_dump(mode="json"))
        return StageCounts(in_=n_in, out=n_out, quarantined=n_in - n_out)

    return run_stage(run, spec, stage, progress=progress, force=force)

"""``mmdata audit RUN``: re-scan the scrubbed output and write the reviewer's report.

The same detectors that scrubbed the run (its saved scrub config, the same key) look at
``RUN/scrubbed`` again; whatever they still find outside our own tokens is a *residual*.
``RUN/audit/`` then holds ``findings.parquet`` (from the stage), ``residual.parquet``,
``summary.json`` and ``report.html`` (counts, residuals, a reproducible sample of findings
shown in context with the PII replaced). None of them holds raw PII.

Frames are re-scanned once per distinct content, in shared OCR batches; frames whose pixels
the stage left untouched (listed in ``audit/scanned_frames.parquet`` with the same scrub
config hash) were already scanned clean by these detectors and are not scanned again — the
re-scan is deterministic, so it would repeat the same answer. Every redacted frame is.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mmdata import atomic
from mmdata.config import ScrubConfig
from mmdata.errors import StageError
from mmdata.scrub.findings import Finding
from mmdata.scrub.keys import load_key


def _records(scrubbed: Path) -> dict[str, dict[str, Any]]:
    cols = ["record_id", "text", "image", "frames", "audio", "transcript"]
    out: dict[str, dict[str, Any]] = {}
    for f in sorted(scrubbed.glob("asset_id=*/date=*/*.parquet")):
        for rec in pq.read_table(f, columns=cols).to_pylist():
            out[rec["record_id"]] = rec
    return out


def _rescan_frames(records: dict[str, dict[str, Any]], s: Any, scanned: dict[str, bool]
                   ) -> dict[str, list[Finding]]:  # fmt: skip
    """What the image scrubber would still change in each distinct scrubbed frame (by sha256).

    Frames the stage wrote with their pixels untouched (``scanned`` says False) were already
    scanned clean by the same detectors and config: they are not decoded again. Every other
    frame (redacted, or unknown to the stage) is re-scanned, in shared OCR batches.
    """
    from mmdata.scrub.image import scrub_images
    from mmdata.scrub.ocr import BATCH_FRAMES

    todo: dict[str, bytes] = {}
    out: dict[str, list[Finding]] = {}
    for rec in records.values():
        for frame in rec["frames"] or []:
            if frame.get("bytes"):
                data = bytes(frame["bytes"])
                sha = hashlib.sha256(data).hexdigest()
                if scanned.get(sha) is False:
                    out[sha] = []
                elif sha not in out:
                    todo[sha] = data
    keys = sorted(todo)
    for i in range(0, len(keys), BATCH_FRAMES):
        chunk = keys[i : i + BATCH_FRAMES]
        results = scrub_images([todo[k] for k in chunk], s.cfg.image, s.detect, s.key)
        for sha, res in zip(chunk, results, strict=True):
            if isinstance(res, Exception):
                raise res
            # What the scrubber would still change; metadata is stripped on every write.
            out[sha] = [f for f in res.findings
                        if f.modality != "metadata" and f.operator != "keep"]  # fmt: skip
    return out


def review_run(run_dir: Path, *, sample: int = 20, seed: int = 0) -> dict[str, Any]:
    """Re-scan ``run_dir``'s scrubbed records; write residuals, summary and the HTML report."""
    from mmdata.scrub.audit import (
        AuditWriter,
        audit_summary,
        read_audit,
        rescan_image,
        rescan_text,
        rescan_transcript,
        scrub_config_hash,
    )
    from mmdata.scrub.report import build_sample, record_resolver, write_report
    from mmdata.scrub.stage import SCANNED_FILE, SCRUB_CONFIG, Scrubbers, read_scanned
    from mmdata.scrub.transcript import transcript_from_field

    scrubbed = run_dir / "scrubbed"
    audit_dir = run_dir / "audit"
    if not (scrubbed / SCRUB_CONFIG).exists() or not (audit_dir / "findings.parquet").exists():
        raise StageError(f"{str(run_dir)!r} has no scrubbed output to audit",
                         hint="run `mmdata scrub` first")  # fmt: skip
    cfg = ScrubConfig.model_validate(json.loads((scrubbed / SCRUB_CONFIG).read_text()))
    key = load_key(cfg.key_env, cfg.key_file)
    s = Scrubbers(cfg, key)

    records = _records(scrubbed)
    cfg_hash = scrub_config_hash(cfg)
    frames = _rescan_frames(records, s, read_scanned(audit_dir / SCANNED_FILE, cfg_hash))
    residual = AuditWriter(cfg_hash, key)
    for rid, rec in records.items():
        found: list[Finding] = []
        for j, note in enumerate(rec["text"] or []):
            found += rescan_text(note["text"] or "", note.get("lang"), s.detect,
                                 field=f"text[{j}].text")  # fmt: skip
        words = transcript_from_field(rec["transcript"]) if rec.get("transcript") else None
        if words is not None:
            found += rescan_transcript(words, s.detect)
        for k, frame in enumerate(rec["frames"] or []):
            if frame.get("bytes"):
                data = bytes(frame["bytes"])
                found += rescan_image(data, lambda d: frames[hashlib.sha256(d).hexdigest()],
                                      field=f"frames[{k}]")  # fmt: skip
        residual.add(rid, found)
    residual.write(audit_dir / "residual.parquet")
    rows = read_audit(audit_dir / "findings.parquet")
    summary = audit_summary(rows, residual.rows)
    picked = build_sample(rows, sample, seed, record_resolver(records))
    write_report(audit_dir / "report.html", summary, picked)
    atomic.write_json(audit_dir / "summary.json", summary)
    return {"summary": summary, "report": str(audit_dir / "report.html"),
            "records": len(records), "sample": len(picked)}  # fmt: skip

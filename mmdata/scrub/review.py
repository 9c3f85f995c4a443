"""``mmdata audit RUN``: re-scan the scrubbed output and write the reviewer's report.

The same detectors that scrubbed the run (its saved scrub config, the same key) look at
``RUN/scrubbed`` again; whatever they still find outside our own tokens is a *residual*.
``RUN/audit/`` then holds ``findings.parquet`` (from the stage), ``residual.parquet``,
``summary.json`` and ``report.html`` (counts, residuals, a reproducible sample of findings
shown in context with the PII replaced). None of them holds raw PII.
"""

from __future__ import annotations

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
    from mmdata.scrub.image import scrub_image
    from mmdata.scrub.report import build_sample, record_resolver, write_report
    from mmdata.scrub.stage import SCRUB_CONFIG, Scrubbers
    from mmdata.scrub.transcript import transcript_from_field

    scrubbed = run_dir / "scrubbed"
    audit_dir = run_dir / "audit"
    if not (scrubbed / SCRUB_CONFIG).exists() or not (audit_dir / "findings.parquet").exists():
        raise StageError(f"{str(run_dir)!r} has no scrubbed output to audit",
                         hint="run `mmdata scrub` first")  # fmt: skip
    cfg = ScrubConfig.model_validate(json.loads((scrubbed / SCRUB_CONFIG).read_text()))
    key = load_key(cfg.key_env, cfg.key_file)
    s = Scrubbers(cfg, key)

    def detect_image(data: bytes) -> list[Finding]:
        # What the scrubber would still change; metadata is stripped on every write.
        return [f for f in scrub_image(data, cfg.image, s.detect, key).findings
                if f.modality != "metadata"]  # fmt: skip

    records = _records(scrubbed)
    residual = AuditWriter(scrub_config_hash(cfg), key)
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
                found += rescan_image(bytes(frame["bytes"]), detect_image, field=f"frames[{k}]")
        residual.add(rid, found)
    residual.write(audit_dir / "residual.parquet")
    rows = read_audit(audit_dir / "findings.parquet")
    summary = audit_summary(rows, residual.rows)
    picked = build_sample(rows, sample, seed, record_resolver(records))
    write_report(audit_dir / "report.html", summary, picked)
    atomic.write_json(audit_dir / "summary.json", summary)
    return {"summary": summary, "report": str(audit_dir / "report.html"),
            "records": len(records), "sample": len(picked)}  # fmt: skip

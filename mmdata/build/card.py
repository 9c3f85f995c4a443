"""The dataset card: ``README.md`` next to the dataset, written by the build stage.

Sections: what the dataset is and how to load it in each format, sources (assets, devices,
connectors, files), counts, label distribution per split, the PII scrub summary (from
``RUN/audit``: counts per entity type and modality, residual findings of the last
``mmdata audit``, records with unchecked speech), the split method with its leakage check,
tasks and skipped tasks, and the exact build config (YAML). It holds no raw PII: the audit
summary holds only counts and keyed hashes, and only counts are shown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mmdata import atomic
from mmdata.config import PipelineConfig
from mmdata.rundir import RunDir

__all__ = ["render_card", "write_card"]


def write_card(out_dir: Path, run: RunDir, config: PipelineConfig, report: dict[str, Any]) -> Path:
    """Write ``out_dir/README.md`` from the build ``report`` and the run's audit; return it."""
    path = out_dir / "README.md"
    atomic.write_text(path, render_card(config, report, _audit(run)))
    return path


def _audit(run: RunDir) -> dict[str, Any] | None:
    """The audit summary of ``mmdata audit`` if it ran, else counts from the stage's findings."""
    audit_dir = run.root / "audit"
    summary = audit_dir / "summary.json"
    if summary.is_file():
        data: dict[str, Any] = json.loads(summary.read_text(encoding="utf-8"))
        return data
    findings = audit_dir / "findings.parquet"
    if findings.is_file():
        from mmdata.scrub.audit import audit_summary

        out = audit_summary(findings)
        out["residual"] = None  # not re-scanned yet
        return out
    return None


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def render_card(config: PipelineConfig, report: dict[str, Any],
                audit: dict[str, Any] | None) -> str:  # fmt: skip
    """The card's Markdown.

    >>> from mmdata.config import PipelineConfig
    >>> cfg = PipelineConfig.model_validate({"run_dir": "r", "assets": {"a": {"sources": [
    ...     {"connector": "notes", "path": "n.jsonl"}]}}})
    >>> report = {"records": 2, "records_used": 2, "samples": 4, "classes": ["normal"],
    ...           "tasks": ["describe"], "source": "scrubbed", "label_balance": {},
    ...           "samples_per_split_task": {}, "skipped": {}, "splits": {"method": "m",
    ...           "sizes": {}, "dropped": {}}, "leakage": {"ok": True, "counts": {}},
    ...           "formats": {"written": {}, "rejected": []}}
    >>> render_card(cfg, report, None).splitlines()[0]
    '# mmdata dataset'
    """
    lines = ["# mmdata dataset", ""]
    lines += [
        "Instruction-tuning samples built by mmdata from time-aligned factory records "
        f"({report['source']} records): {report['samples']:,} samples from "
        f"{report['records_used']:,} of {report['records']:,} windows.", "",
        "## Loading", "",
        "- HF messages: `datasets.load_dataset(\"parquet\", data_files={\"train\": "
        "\"messages/train.parquet\", ...})` (images and audio decode).",
        "- LLaVA: `llava/<split>.json`, image folder = this folder.",
        "- LLaMA-Factory: `dataset_dir=llama_factory`, datasets `mmdata_train`, "
        "`mmdata_validation`, `mmdata_test`.",
        "- Trainer index: `samples.parquet` (media by sha256, see `media.parquet`, "
        "`sensors.parquet`).", "",
    ]  # fmt: skip
    lines += ["## Sources", ""]
    rows = []
    for asset, acfg in sorted(config.assets.items()):
        for src in acfg.sources:
            rows.append([asset, acfg.line or "-", src.device or src.connector, src.connector,
                         f"`{src.path}`"])  # fmt: skip
    lines += [*_table(["asset", "line", "device", "connector", "path"], rows), ""]
    lines += ["## Counts", ""]
    per = report["samples_per_split_task"]
    tasks = sorted({t for v in per.values() for t in v})
    lines += _table(["split", *tasks, "total"],
                    [[s, *(v.get(t, 0) for t in tasks), sum(v.values())]
                     for s, v in per.items()])  # fmt: skip
    lines += ["", "## Labels (windows per class and split)", ""]
    classes = report["classes"]
    lines += _table(["split", *classes, "(unlabeled)"],
                    [[s, *(v.get(c, 0) for c in classes), v.get("(unlabeled)", 0)]
                     for s, v in report["label_balance"].items()])  # fmt: skip
    lines += ["", *_pii_section(audit, report["source"])]
    splits = report["splits"]
    lines += ["## Splits", "", f"Method: {splits['method']}", ""]
    lines += _table(["split", "windows"], [[k, v] for k, v in splits["sizes"].items()])
    for reason, n in splits.get("dropped", {}).items():
        lines.append(f"\nDropped {n:,} windows: {reason}.")
    leak = report["leakage"]
    verdict = "passed" if leak["ok"] else "FAILED"
    lines += ["", f"Leakage check {verdict}: no record, source-file time range or overlapping "
              "window is shared between splits." if leak["ok"] else
              f"Leakage check {verdict}: {leak['counts']}", ""]  # fmt: skip
    lines += ["## Tasks", "", ", ".join(report["tasks"]), ""]
    if report["skipped"]:
        skipped = [[k, v] for k, v in report["skipped"].items()]
        lines += [*_table(["task: reason skipped", "windows"], skipped), ""]
    rejected = report["formats"].get("rejected", [])
    if rejected:
        lines += [f"{len(rejected):,} samples rejected at export (see build_report.json).", ""]
    lines += ["## Build config", "", "```yaml",
              yaml.safe_dump({"build": config.build.model_dump(mode="json")}, sort_keys=True,
                             allow_unicode=True).rstrip(), "```", ""]  # fmt: skip
    return "\n".join(lines)


def _pii_section(audit: dict[str, Any] | None, source: str) -> list[str]:
    lines = ["## PII scrub", ""]
    if source != "scrubbed":
        return [*lines, "**Built from records that were NOT scrubbed for PII.**", ""]
    if audit is None:
        return [*lines, "No audit found in this run.", ""]
    lines += [
        f"{audit['findings']:,} findings in {audit['records_with_findings']:,} records "
        "were anonymized (counts only; the audit holds keyed hashes, never the text).",
        "",
    ]
    em = audit.get("by_entity_modality", {})
    mods = sorted({m for v in em.values() for m in v})
    lines += _table(["entity", *mods], [[e, *(v.get(m, 0) for m in mods)]
                                        for e, v in em.items()])  # fmt: skip
    residual = audit.get("residual")
    if residual is None:
        lines += ["", "Not re-scanned yet: run `mmdata audit RUN` for residual findings."]
    else:
        lines += ["", f"Residual findings of the re-scan: {residual['findings']:,} "
                  f"in {residual['records']:,} records."]  # fmt: skip
    unchecked = audit.get("pii_unchecked", {}).get("records", 0)
    if unchecked:
        lines += [f"{unchecked:,} records hold speech without a transcript (flagged "
                  "`pii_unchecked`)."]  # fmt: skip
    return [*lines, ""]

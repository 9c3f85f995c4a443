"""The PII audit trail: one row per finding, never the original, and the reviewer's summary.

Rows follow ``schemas/audit.v1.json`` (generated from :class:`AuditRow`). The scrub stage
collects them with an :class:`AuditWriter` (``add(record_id, findings)`` per record) and
writes Parquet atomically (``RUN/audit/findings.parquet``, or one part file per partition).
A row holds where the PII was (character span, pixel box or time range, as typed columns),
what found it (recognizer, model name + version, score), what was done (operator), the keyed
HMAC of the normalized original (``original_hmac``: 64 hex digits or empty, enforced by the
schema, so raw text cannot be stored there), the key's public fingerprint (``key_id``, so a
reviewer knows which HMACs are comparable) and the scrub config's hash.

``mmdata audit`` re-scans the scrubbed output with the same detectors (:func:`rescan_text`,
:func:`rescan_transcript`, :func:`rescan_image`), collects the residual findings in a second
writer, and summarizes both with :func:`audit_summary`; :func:`pick_sample` draws the
reproducible review sample (same rows + same seed -> same sample).

>>> from mmdata.scrub.findings import Finding
>>> w = AuditWriter(config_hash="0" * 64, key=b"k" * 32)
>>> f = Finding("text", "PERSON", 0.85, "SpacyRecognizer", "pseudonym", "ab" * 32, 0, 10,
...             field="text[0].text", model="en_core_web_sm 3.8.0")
>>> rows = w.add("rec-1", [f], out_spans=[(0, 19)])
>>> rows[0].char_start, rows[0].out_end, rows[0].entity
(0, 19, 'PERSON')
>>> audit_summary(w.rows, [])["by_entity"]
{'PERSON': 1}
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from mmdata import atomic
from mmdata.config import ScrubConfig
from mmdata.config import config_hash as _config_hash
from mmdata.errors import InputDataError
from mmdata.scrub.audio import UNCHECKED_ENTITY, TextDetector
from mmdata.scrub.findings import Finding
from mmdata.scrub.transcript import Transcript, word_range

AUDIT_SCHEMA_VERSION: Final = "mmdata.audit/1"
_HEX64 = r"^[0-9a-f]{64}$"


class AuditRow(BaseModel):
    """One PII finding (or one residual finding of a re-scan) in one record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal["mmdata.audit/1"] = AUDIT_SCHEMA_VERSION
    record_id: str = Field(max_length=200, description="The record the finding is in.")
    modality: Literal["text", "image", "audio", "metadata"]
    entity: str = Field(
        pattern=r"^[A-Z][A-Z0-9_]*$",
        max_length=64,
        description="Entity type: PERSON, EMAIL_ADDRESS, FACE, UNTRANSCRIBED_SPEECH, ...",
    )
    field: str | None = Field(
        None, max_length=200, description="Where in the record: text[2].text, frames[0], audio."
    )
    char_start: int | None = Field(None, ge=0, description="Text: span start in the original.")
    char_end: int | None = Field(None, ge=0, description="Text: span end (exclusive).")
    out_start: int | None = Field(
        None, ge=0, description="Text: start of the replacement token in the scrubbed text."
    )
    out_end: int | None = Field(None, ge=0, description="Text: end of the replacement token.")
    bbox_x0: int | None = Field(None, description="Image: box left (pixels).")
    bbox_y0: int | None = Field(None, description="Image: box top.")
    bbox_x1: int | None = Field(None, description="Image: box right (exclusive).")
    bbox_y1: int | None = Field(None, description="Image: box bottom (exclusive).")
    t0_ns: int | None = Field(None, description="Audio: start of the replaced range (ns).")
    t1_ns: int | None = Field(None, description="Audio: end of the replaced range (ns).")
    recognizer: str = Field(max_length=200, description="Recognizer or detector that fired.")
    model: str | None = Field(
        None, max_length=200, description="Model name and version behind it, if any."
    )
    score: float = Field(ge=0.0, le=1.0, description="Detector confidence.")
    operator: str = Field(
        max_length=64,
        description="What was applied: placeholder, pseudonym, mask, redact, keep, blur, box, "
        "mute+<op>, beep+<op>, strip, flag, drop; 'none' for residual findings.",
    )
    original_hmac: str = Field(
        pattern=r"^([0-9a-f]{64})?$",
        description="HMAC-SHA256 (hex) of the normalized original; empty where there is no "
        "text. Never the original.",
    )
    key_id: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{16}$",
        description="Public fingerprint of the HMAC key (HMAC of a constant), not the key.",
    )
    config_hash: str = Field(pattern=_HEX64, description="sha256 of the scrub config.")


_INT = pa.int64()
_ARROW_SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("entity", pa.string(), nullable=False),
        pa.field("field", pa.string()),
        *(pa.field(c, _INT) for c in ("char_start", "char_end", "out_start", "out_end")),
        *(pa.field(f"bbox_{c}", _INT) for c in ("x0", "y0", "x1", "y1")),
        pa.field("t0_ns", _INT),
        pa.field("t1_ns", _INT),
        pa.field("recognizer", pa.string(), nullable=False),
        pa.field("model", pa.string()),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("operator", pa.string(), nullable=False),
        pa.field("original_hmac", pa.string(), nullable=False),
        pa.field("key_id", pa.string()),
        pa.field("config_hash", pa.string(), nullable=False),
    ],
    metadata={"mmdata.schema": AUDIT_SCHEMA_VERSION},
)
assert _ARROW_SCHEMA.names == list(AuditRow.model_fields)


def key_id(key: bytes) -> str:
    """A public fingerprint of the HMAC key (16 hex digits); reveals nothing about the key.

    >>> len(key_id(b"k" * 32))
    16
    """
    return hmac.new(key, b"mmdata.key-id/1", hashlib.sha256).hexdigest()[:16]


def scrub_config_hash(cfg: ScrubConfig) -> str:
    """The hash stored in every row: sha256 of the scrub config (names the key, never holds it).

    >>> len(scrub_config_hash(ScrubConfig()))
    64
    """
    return _config_hash(cfg)


def row_from_finding(
    record_id: str,
    finding: Finding,
    config_hash: str,
    key_id: str | None = None,
    out_span: tuple[int, int] | None = None,
) -> AuditRow:
    """The audit row of one finding (validated: a malformed finding raises ValueError)."""
    x0, y0, x1, y1 = finding.bbox if finding.bbox is not None else (None, None, None, None)
    return AuditRow(
        record_id=record_id,
        modality=finding.modality,
        entity=finding.entity,
        field=finding.field,
        char_start=finding.start,
        char_end=finding.end,
        out_start=out_span[0] if out_span else None,
        out_end=out_span[1] if out_span else None,
        bbox_x0=x0,
        bbox_y0=y0,
        bbox_x1=x1,
        bbox_y1=y1,
        t0_ns=finding.t0_ns,
        t1_ns=finding.t1_ns,
        recognizer=finding.recognizer,
        model=finding.model,
        score=min(1.0, max(0.0, float(finding.score))),
        operator=finding.operator,
        original_hmac=finding.original_hash,
        key_id=key_id,
        config_hash=config_hash,
    )


class AuditWriter:
    """Collects audit rows in ``add`` order; writes them as Parquet atomically."""

    def __init__(self, config_hash: str, key: bytes | None = None) -> None:
        self.config_hash = config_hash
        self.key_id = key_id(key) if key is not None else None
        self.rows: list[AuditRow] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(
        self,
        record_id: str,
        findings: Iterable[Finding],
        out_spans: Sequence[tuple[int, int] | None] | None = None,
    ) -> list[AuditRow]:
        """Append one row per finding of ``record_id``; ``out_spans[i]`` (optional) is where
        finding ``i``'s replacement token sits in the scrubbed text. Returns the new rows."""
        items = list(findings)
        spans = list(out_spans) if out_spans is not None else [None] * len(items)
        if len(spans) != len(items):
            raise ValueError(f"{len(items)} findings but {len(spans)} out_spans")
        new = [
            row_from_finding(record_id, f, self.config_hash, self.key_id, s)
            for f, s in zip(items, spans, strict=True)
        ]
        self.rows.extend(new)
        return new

    def to_table(self) -> pa.Table:
        """The rows as an Arrow table with the audit schema."""
        cols = {n: [getattr(r, n) for r in self.rows] for n in _ARROW_SCHEMA.names}
        return pa.table(cols, schema=_ARROW_SCHEMA)

    def write(self, path: Path | str) -> None:
        """Atomically write the rows as Parquet (an empty table when there are none)."""
        atomic.write_parquet(path, self.to_table())


def read_audit(path: Path | str) -> list[AuditRow]:
    """Rows of an audit Parquet file, or of every ``*.parquet`` in a folder (sorted by name).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.parquet"
    >>> AuditWriter("0" * 64).write(p)
    >>> read_audit(p)
    []
    """
    p = Path(path)
    files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
    rows: list[AuditRow] = []
    for f in files:
        try:
            table = pq.read_table(f)
        except (OSError, pa.ArrowInvalid) as err:
            raise InputDataError(f"audit file {f.name!r} is unreadable: {err}") from None
        rows += [AuditRow.model_validate(r) for r in table.to_pylist()]
    return rows


# --- re-scan ------------------------------------------------------------------------------

#: the tokens the operators write (placeholder <PERSON>, pseudonym <PERSON_3fa1c2d4e5>)
OPERATOR_TOKEN = re.compile(r"<[A-Z][A-Z0-9_]*(?:_[0-9a-f]{4,64})?>")


def drop_own_tokens(text: str, findings: Iterable[Finding]) -> list[Finding]:
    """Findings that are not inside an operator token (a re-scan must not count our tokens).

    >>> f = Finding("text", "PERSON", 0.6, "x", "placeholder", "", start=6, end=12)
    >>> drop_own_tokens("hello <PERSON> ok", [f])
    []
    """
    tokens = [(m.start(), m.end()) for m in OPERATOR_TOKEN.finditer(text)]
    starts = [a for a, _ in tokens]
    out = []
    for f in findings:
        i = bisect.bisect_right(starts, f.start or 0) - 1
        if i < 0 or (f.end or 0) > tokens[i][1]:
            out.append(f)
    return out


def rescan_text(
    text: str, lang: str | None, detect: TextDetector, *, field: str | None = None
) -> list[Finding]:
    """Residual PII in scrubbed ``text``: ``detect``'s findings outside operator tokens,
    with ``operator="none"`` (nothing was applied to them)."""
    return [
        replace(f, operator="none", field=field) for f in drop_own_tokens(text, detect(text, lang))
    ]


def rescan_transcript(
    transcript: Transcript, detect: TextDetector, *, field: str = "audio"
) -> list[Finding]:
    """Residual PII in a scrubbed transcript, as audio findings with the words' time range."""
    text, spans = transcript.joined()
    starts, ends = [a for a, _ in spans], [b for _, b in spans]
    out = []
    for f in drop_own_tokens(text, detect(text, transcript.language)):
        r = word_range(starts, ends, f.start or 0, f.end or 0)
        words = transcript.words[r[0] : r[1] + 1] if r else ()
        out.append(
            replace(
                f,
                modality="audio",
                operator="none",
                field=field,
                t0_ns=min((w.start_ns for w in words), default=None),
                t1_ns=max((w.end_ns for w in words), default=None),
            )
        )
    return out


def rescan_image(
    image_bytes: bytes, detect_image: Callable[[bytes], list[Finding]], *, field: str = "image"
) -> list[Finding]:
    """Residual PII in a scrubbed image: the image detector's findings (faces, OCR text)."""
    return [replace(f, operator="none", field=field) for f in detect_image(image_bytes)]


# --- summary and sample -----------------------------------------------------------------------


def _rows(src: Path | str | Sequence[AuditRow] | None) -> list[AuditRow]:
    if src is None:
        return []
    if isinstance(src, Path | str):
        return read_audit(src)
    return list(src)


def _count(rows: Sequence[AuditRow], attr: str) -> dict[str, int]:
    return dict(sorted(Counter(str(getattr(r, attr)) for r in rows).items()))


def audit_summary(
    audit: Path | str | Sequence[AuditRow],
    residual_findings: Path | str | Sequence[AuditRow] | None = None,
    *,
    max_items: int = 200,
) -> dict[str, Any]:
    """Counts per entity type, modality and operator; records with unchecked speech; the
    residual findings of the re-scan (counts and up to ``max_items`` rows). JSON-able, and
    holds nothing but what the rows hold (no PII)."""
    rows, residual = _rows(audit), _rows(residual_findings)
    found = [r for r in rows if r.entity != UNCHECKED_ENTITY]
    unchecked = sorted({r.record_id for r in rows if r.entity == UNCHECKED_ENTITY})
    by_em: dict[str, dict[str, int]] = {}
    for r in found:
        by_em.setdefault(r.entity, {}).setdefault(r.modality, 0)
        by_em[r.entity][r.modality] += 1
    return {
        "schema_version": AUDIT_SCHEMA_VERSION,
        "findings": len(found),
        "records_with_findings": len({r.record_id for r in found}),
        "by_entity": _count(found, "entity"),
        "by_modality": _count(found, "modality"),
        "by_entity_modality": dict(sorted(by_em.items())),
        "by_operator": _count(found, "operator"),
        "pii_unchecked": {"records": len(unchecked), "record_ids": unchecked[:max_items]},
        "residual": {
            "findings": len(residual),
            "records": len({r.record_id for r in residual}),
            "by_entity": _count(residual, "entity"),
            "by_modality": _count(residual, "modality"),
            "items": [r.model_dump(mode="json") for r in residual[:max_items]],
        },
        "config_hashes": sorted({r.config_hash for r in rows + residual}),
        "key_ids": sorted({r.key_id for r in rows + residual if r.key_id}),
    }


def _order_key(r: AuditRow) -> tuple[Any, ...]:
    loc = (r.char_start, r.bbox_x0, r.bbox_y0, r.t0_ns, r.char_end, r.bbox_x1, r.t1_ns)
    where = tuple(-1 if v is None else v for v in loc)
    return (r.record_id, r.field or "", r.modality, r.entity, *where, r.recognizer, r.operator)


def pick_sample(rows: Sequence[AuditRow], n: int, seed: int) -> list[AuditRow]:
    """``n`` rows drawn at random with ``seed``; independent of row order, so the same audit
    and seed always give the same sample (listed in a stable order).

    >>> from mmdata.scrub.findings import Finding
    >>> w = AuditWriter("0" * 64)
    >>> _ = w.add("r", [Finding("text", "PERSON", 1.0, "x", "placeholder", "", i, i + 1)
    ...                 for i in range(50)])
    >>> pick_sample(w.rows, 3, seed=7) == pick_sample(w.rows[::-1], 3, seed=7)
    True
    """
    ordered = sorted(rows, key=_order_key)
    picked = sorted(random.Random(seed).sample(range(len(ordered)), min(max(n, 0), len(ordered))))
    return [ordered[i] for i in picked]

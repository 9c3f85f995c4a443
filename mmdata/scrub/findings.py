"""A PII finding: what was found where, by what, and what was done — never the original.

Every scrubber (text, image, audio, metadata) returns :class:`Finding` objects; the audit
stores them one row each. ``original_hash`` is the keyed HMAC of the normalized original
(see :mod:`mmdata.scrub.keys`); the original itself is never kept.

>>> f = Finding(modality="text", entity="PERSON", start=0, end=10, score=0.85,
...             recognizer="SpacyRecognizer", operator="pseudonym", original_hash="ab")
>>> f.location()
'chars 0-10'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Modality = Literal["text", "image", "audio", "metadata"]


@dataclass(frozen=True)
class Finding:
    """One piece of PII found (and, unless ``operator == "keep"``, removed)."""

    modality: Modality
    entity: str  # PERSON, EMAIL_ADDRESS, PHONE_NUMBER, EMPLOYEE_ID, FACE, EXIF_GPS, ...
    score: float
    recognizer: str  # which recognizer / detector fired (and its pattern name, if any)
    operator: (
        str  # placeholder | pseudonym | mask | redact | keep | blur | box | mute | beep | strip
    )
    original_hash: str  # keyed HMAC of the normalized original; "" where there is no text
    start: int | None = None  # text: character span [start, end) in the original text
    end: int | None = None
    bbox: tuple[int, int, int, int] | None = None  # image: x0, y0, x1, y1 (pixels)
    t0_ns: int | None = None  # audio: time range within the record's audio
    t1_ns: int | None = None
    field: str | None = None  # where in the record: "text[2].text", "image", "audio", ...
    model: str | None = None  # model name + version behind the recognizer, if any

    def location(self) -> str:
        """Human-readable location."""
        if self.start is not None:
            return f"chars {self.start}-{self.end}"
        if self.bbox is not None:
            return "bbox " + ",".join(str(v) for v in self.bbox)
        if self.t0_ns is not None:
            return f"time {self.t0_ns}-{self.t1_ns} ns"
        return self.field or ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        d = asdict(self)
        d["bbox"] = list(self.bbox) if self.bbox is not None else None
        return d

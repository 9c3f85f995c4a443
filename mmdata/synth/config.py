"""Configuration and result models of the synthetic factory.

>>> cfg = SynthConfig(assets=2, minutes=1.5, seed=7)
>>> cfg.asset_ids()
['press-1', 'press-2']
>>> cfg.duration_ns()
90000000000
>>> cfg.sensor_format_for(0), cfg.sensor_format_for(1)
('parquet', 'csv')
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mmdata.timebase import NS_PER_MS, datetime_to_ns

#: Default start of the synthetic shift (08:00 UTC = 17:00 plant time in Asia/Tokyo).
DEFAULT_START = dt.datetime(2026, 3, 1, 8, 0, 0, tzinfo=dt.UTC)


class SynthConfig(BaseModel):
    """Everything that decides the synthetic factory's output (same config -> same bytes).

    >>> SynthConfig(minutes=2, camera="mp4").camera
    'mp4'
    >>> try:
    ...     SynthConfig(start="2026-03-01T08:00:00")  # naive datetimes are refused
    ... except ValueError as err:
    ...     print("timezone-aware" in str(err))
    True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    assets: int = Field(
        3, ge=1, le=50, description="Number of assets (presses press-1..press-N) on the line."
    )
    minutes: float = Field(
        10.0, gt=0, le=24 * 60, description="Length of the recording in minutes (reference time)."
    )
    seed: int = Field(
        0, ge=0, le=2**63 - 1, description="Root seed; every random draw derives from it."
    )
    start: dt.datetime = Field(
        DEFAULT_START,
        description="Reference start time (timezone-aware; stored as UTC). Also the clock "
        "models' origin_ns.",
    )
    camera: Literal["jpeg", "mp4"] = Field(
        "jpeg", description="Camera output: one JPEG (with EXIF) per frame, or one MP4 per asset."
    )
    camera_fps: float = Field(
        2.0, gt=0, le=60, description="Nominal camera frame rate on the camera's own clock."
    )
    image_width: int = Field(320, ge=160, le=1920, description="Frame width in pixels (even).")
    image_height: int = Field(240, ge=120, le=1080, description="Frame height in pixels (even).")
    accel_rate_hz: int = Field(
        5000,
        ge=2000,
        le=50_000,
        description="Accelerometer sample rate (3 axes, g, float32) on its own clock.",
    )
    mic_rate_hz: int = Field(
        16_000,
        ge=16_000,
        le=96_000,
        description="Microphone sample rate (16-bit PCM mono WAV) on its own clock.",
    )
    sensor_format: Literal["parquet", "csv", "mixed"] = Field(
        "mixed",
        description="Accelerometer file format; 'mixed': assets at even 0-based position "
        "(press-1, press-3, ...) write Parquet, odd ones CSV.",
    )
    file_seconds: int = Field(
        60,
        ge=1,
        le=3600,
        description="Accelerometer and microphone files are split every this many seconds "
        "of device time (also the JPEG work-chunk size).",
    )
    max_offset_ms: int = Field(
        2000, ge=0, le=60_000, description="Device clock offsets are drawn uniformly in ±this."
    )
    max_drift_ppm: float = Field(
        100.0, ge=0, le=1000, description="Device clock drifts are drawn uniformly in ±this."
    )
    sync_interval_s: tuple[int, int] = Field(
        (45, 75),
        description="Range [low, high] in seconds of the jittered interval between line-wide "
        "sync events (hammer tap + LED flash).",
    )
    workers: int = Field(
        2, ge=1, le=64, description="Process pool size (1 = in-process); never changes output."
    )

    @field_validator("start")
    @classmethod
    def _aware_utc(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                "start must be timezone-aware (e.g. 2026-03-01T08:00:00Z); naive times are "
                "ambiguous"
            )
        return value.astimezone(dt.UTC)

    @field_validator("sync_interval_s")
    @classmethod
    def _interval_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 5 <= low <= high <= 3600:
            raise ValueError(f"sync_interval_s must satisfy 5 <= low <= high <= 3600, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SynthConfig:
        if self.image_width % 2 or self.image_height % 2:
            raise ValueError(
                f"image_width and image_height must be even (H.264 4:2:0), got "
                f"{self.image_width}x{self.image_height}"
            )
        if self.minutes * 60_000 < 1:
            raise ValueError("minutes must cover at least 1 ms")
        return self

    # -- derived values ---------------------------------------------------------------
    def start_ns(self) -> int:
        """Reference start in int ns since the epoch (also ``origin_ns`` of every clock).

        >>> SynthConfig().start_ns()
        1772352000000000000
        """
        return datetime_to_ns(self.start)

    def duration_ns(self) -> int:
        """Recording length in int ns (``minutes`` rounded to the millisecond).

        >>> SynthConfig(minutes=0.5).duration_ns()
        30000000000
        """
        return round(self.minutes * 60_000) * NS_PER_MS

    def asset_ids(self) -> list[str]:
        """Asset ids ``press-1`` .. ``press-N``.

        >>> SynthConfig(assets=1).asset_ids()
        ['press-1']
        """
        return [f"press-{i + 1}" for i in range(self.assets)]

    def sensor_format_for(self, asset_index: int) -> Literal["parquet", "csv"]:
        """Accelerometer file format of the asset at 0-based ``asset_index``.

        >>> SynthConfig(sensor_format="csv").sensor_format_for(0)
        'csv'
        """
        if self.sensor_format == "mixed":
            return "parquet" if asset_index % 2 == 0 else "csv"
        return self.sensor_format


class SynthSummary(BaseModel):
    """What :func:`mmdata.synth.generate_factory` wrote.

    >>> s = SynthSummary(out_dir=Path("out"), assets=["press-1"], files={"ntp_log": 3},
    ...                  bytes_written=10, samples={"notes": 2}, elapsed_ns=5)
    >>> s.files["ntp_log"]
    3
    """

    model_config = ConfigDict(extra="forbid")

    out_dir: Path = Field(description="The output directory.")
    assets: list[str] = Field(description="Asset ids written.")
    files: dict[str, int] = Field(description="File count per kind.")
    bytes_written: int = Field(description="Total size of every file written, in bytes.")
    samples: dict[str, int] = Field(
        description="Counts: accel_samples (per axis), audio_samples, frames, notes, "
        "sync_events, fault_intervals, name_tag_frames."
    )
    elapsed_ns: int = Field(description="Wall-clock time the generation took (not in outputs).")
    ground_truth: Path | None = Field(None, description="Path of ground_truth.json.")
    workers: int = Field(1, description="Process pool size used.")
    start_ns: int = Field(0, description="Reference start, int ns.")
    end_ns: int = Field(0, description="Reference end (exclusive), int ns.")

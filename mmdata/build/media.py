"""One record's media as ``build`` wants them: frames, audio, and sensor renderings.

:class:`RecordMedia` gathers a record's media the way the build config asks — camera frames
(``build.images``), the window's WAV or its spectrogram (``build.audio_as``), sensor images,
a text summary or raw tensors (``build.sensors_as``, rendered by :mod:`mmdata.build.sensors`)
— each rendered at most once however many tasks use it; :meth:`RecordMedia.attach` hands one
task its media as :class:`Attached`, in placeholder order. :func:`image_media` keeps JPEG/PNG
as they are and converts anything else to PNG; :func:`defuse` makes ``<image>``/``<audio>``
in data text inert, so a note cannot forge a placeholder.

>>> defuse("valve <image> stuck"), image_media(b"\\x89PNG\\r\\n\\x1a\\n...").ext
('valve [image] stuck', 'png')
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from PIL import Image

from mmdata.build.samples import Media, MediaRole
from mmdata.build.sensors import (
    _PNG_LEVEL,
    ChannelStats,
    FloatArray,
    _summary_text,
    audio_spectrogram_png,
    render_spectrogram,
    render_waveform,
    sensor_tensor,
    stream_stats,
)
from mmdata.config import BuildConfig
from mmdata.errors import InputDataError

_PLACEHOLDER = re.compile(r"<(image|audio)>")


def defuse(text: str) -> str:
    """Data text with media placeholders made inert, so a note cannot forge one.

    >>> defuse("see <image> here")
    'see [image] here'
    """
    return _PLACEHOLDER.sub(r"[\1]", text)


def image_media(data: bytes, role: MediaRole = "frame") -> Media:
    """An image as :class:`Media`: JPEG and PNG kept as they are (extension from the magic
    bytes), any other format Pillow reads converted to PNG; unreadable bytes raise
    :class:`InputDataError`.

    >>> image_media(b"\\xff\\xd8\\xff\\xe0rest").ext
    'jpg'
    """
    if data[:3] == b"\xff\xd8\xff":
        return Media(kind="image", data=data, ext="jpg", role=role)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return Media(kind="image", data=data, ext="png", role=role)
    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputDataError(
            f"image bytes ({len(data)} bytes, starting {data[:8]!r}) are not a readable image",
            hint="check the record's image/frames columns",
        ) from err
    buf = io.BytesIO()
    rgb.save(buf, format="PNG", compress_level=_PNG_LEVEL)
    return Media(kind="image", data=buf.getvalue(), ext="png", role=role)


@dataclass
class Attached:
    """Media attached to one sample: images and audios in placeholder order, what each is
    (``names``, images first), and raw sensor tensors by stream id."""

    images: list[Media] = field(default_factory=list)
    audios: list[Media] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    tensors: dict[str, FloatArray] = field(default_factory=dict)

    def legend(self) -> str:
        """One sentence saying what each placeholder stands for ("" without media).

        >>> Attached(names=["camera frame"], images=[image_media(b"\\xff\\xd8\\xff")]).legend()
        'Attached: image 1: camera frame.'
        """
        n_img = len(self.images)
        parts = [f"image {i + 1}: {n}" for i, n in enumerate(self.names[:n_img])]
        parts += [f"audio {i + 1}: {n}" for i, n in enumerate(self.names[n_img:])]
        return "Attached: " + "; ".join(parts) + "." if parts else ""


class RecordMedia:
    """The media of one record as ``build`` wants them, each rendered at most once.

    >>> import numpy as np
    >>> from mmdata.config import BuildConfig
    >>> rec = {"window_start_ns": 0, "window_end_ns": 2_000_000_000, "sensors": [
    ...     {"stream_id": "acc", "sample_rate": 100.0, "channels": ["ax"],
    ...      "values": [np.sin(np.arange(200) / 3.0)]}]}
    >>> a = RecordMedia(rec, BuildConfig(sensors_as="waveform_image")).attach(["sensor"])
    >>> a.names, a.images[0].role
    (['waveform of acc (ax)'], 'waveform')
    """

    def __init__(self, record: Mapping[str, Any], cfg: BuildConfig) -> None:
        self.record = record
        self.cfg = cfg

    @cached_property
    def frames(self) -> list[tuple[Media, str]]:
        """Attached frames with their names, per ``build.images``."""
        start = int(self.record["window_start_ns"])
        if self.cfg.images == "all":
            frames = sorted(
                (f for f in self.record.get("frames") or [] if f.get("bytes")),
                key=lambda f: (int(f.get("ts_ns") or 0), str(f.get("stream_id") or "")),
            )
            at = [(int(f.get("ts_ns") or start) - start) / 1e9 for f in frames]
            if frames:
                return [(image_media(f["bytes"]), f"camera frame at {t:.1f} s")
                        for f, t in zip(frames, at, strict=True)]  # fmt: skip
        image = self.record.get("image") or {}
        if self.cfg.images == "none" or not image.get("bytes"):
            return []
        return [(image_media(image["bytes"]), "camera frame")]

    @cached_property
    def _audio_bytes(self) -> bytes | None:
        data = (self.record.get("audio") or {}).get("bytes")
        if not data:
            return None
        if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
            raise InputDataError(
                f"audio bytes ({len(data)} bytes, starting {data[:12]!r}) are not a WAV",
                hint="records carry the window's audio as WAV bytes",
            )
        return bytes(data)

    @cached_property
    def audio(self) -> Media | None:
        """The window's audio per ``build.audio_as``: WAV audio, a spectrogram image, or None."""
        data = self._audio_bytes if self.cfg.audio_as != "none" else None
        if data is None:
            return None
        if self.cfg.audio_as == "audio":
            return Media(kind="audio", data=data, ext="wav", role="audio")
        png = audio_spectrogram_png(data)
        return Media(kind="image", data=png, ext="png", role="audio_spectrogram")

    @cached_property
    def streams(self) -> list[Mapping[str, Any]]:
        """Sensor streams holding samples, sorted by stream id."""
        out = [
            s
            for s in self.record.get("sensors") or []
            if s.get("values") is not None and len(s["values"]) and len(s["values"][0])
        ]
        return sorted(out, key=lambda s: str(s.get("stream_id") or ""))

    @cached_property
    def _stream_stats(self) -> list[list[ChannelStats]]:
        return [stream_stats(s["values"], _rate(s), [str(c) for c in s.get("channels") or []])
                for s in self.streams]  # fmt: skip

    @cached_property
    def stats(self) -> list[dict[str, Any]]:
        """Per channel statistics of every stream (see :class:`ChannelStats`), as dicts."""
        return [
            {"stream_id": _sid(s), "channel": defuse(c.channel),
             "rms": float(f"{c.rms:.3g}"), "peak": float(f"{c.peak:.3g}"),
             "crest": round(c.crest, 2), "kurtosis": round(c.kurtosis, 2),
             "freqs_hz": [round(f) for f in c.freqs_hz],
             "env_hz": round(c.env_hz) if c.env_hz is not None else None,
             "env_ratio": round(c.env_ratio, 1) if c.env_ratio is not None else None}
            for s, stats in zip(self.streams, self._stream_stats, strict=True)
            for c in stats
        ]  # fmt: skip

    @cached_property
    def summary(self) -> str | None:
        """Text summary of every stream (``sensors_as: text_summary`` only), else None."""
        if self.cfg.sensors_as != "text_summary" or not self.streams:
            return None
        return "\n".join(
            f"{_sid(s)}: " + defuse(_summary_text(stats, _rate(s)))
            for s, stats in zip(self.streams, self._stream_stats, strict=True)
        )

    @cached_property
    def sensor_images(self) -> list[tuple[Media, str]]:
        """One PNG per stream (``sensors_as: spectrogram_image | waveform_image``), named."""
        render = render_spectrogram if self.cfg.sensors_as == "spectrogram_image" else (
            render_waveform)  # fmt: skip
        role: MediaRole = "spectrogram" if render is render_spectrogram else "waveform"
        return [
            (
                Media("image", render(s["values"], _rate(s)), "png", role),
                f"{role} of {_sid(s)} ({', '.join(_channels(s))})",
            )
            for s in self.streams
        ]

    @cached_property
    def tensors(self) -> dict[str, FloatArray]:
        """Raw samples per stream id (``sensors_as: tensor``)."""
        return {str(s.get("stream_id")): sensor_tensor(s["values"]) for s in self.streams}

    def attach(self, media: Sequence[str]) -> Attached:
        """The media of a task whose ``media`` list is ``media``, in that order."""
        out = Attached()
        images: list[tuple[Media, str]] = []
        audios: list[Media] = []
        mode = self.cfg.sensors_as
        for kind in media:
            if kind == "image":
                images += self.frames
            elif kind == "audio" and self.audio is not None:
                if self.audio.kind == "audio":
                    audios.append(self.audio)
                else:
                    images.append((self.audio, "audio spectrogram"))
            elif kind == "sensor" and mode in ("spectrogram_image", "waveform_image"):
                images += self.sensor_images
            elif kind == "sensor" and mode == "tensor":
                out.tensors.update(self.tensors)
        out.images = [m for m, _ in images]
        out.audios = audios
        out.names = [n for _, n in images] + ["audio"] * len(audios)
        return out


def _sid(s: Mapping[str, Any]) -> str:
    return defuse(str(s.get("stream_id") or "sensor"))


def _channels(s: Mapping[str, Any]) -> list[str]:
    return [defuse(str(c)) for c in s.get("channels") or []]


def _rate(s: Mapping[str, Any]) -> float:
    return float(s.get("sample_rate") or 0.0)

"""The inspection camera: a conveyor scene rendered per frame, written as JPEG or MP4.

Scene: a wall with a station sign, a gantry with an LED bar over a conveyor belt, and
parts (grey discs and plates) moving left to right. Frame ``i`` is taken at device time
``device_start + floor(i * 1e9 / fps)`` and shows the scene at that frame's reference time:

* ``surface_scratch`` (image only): every part in view carries a dark diagonal scratch;
* sync events: the LED bar flashes and the scene is ~45 % brighter for 1.5 s;
* name tags: now and then an operator in blue coveralls stands in front of the camera,
  wearing a light badge with a Latin-script name in dark capitals (ground truth records the
  text's pixel box ``[x0, y0, x1, y1]``, x1/y1 exclusive).

JPEG (``camera="jpeg"``): ``cam-<asset>_<YYYYMMDDTHHMMSS.mmm>Z.jpg`` per frame, device time
(UTC) in the name, quality 85, EXIF: Make ``InspectCam``, Model ``IC-320``, and in the Exif
IFD DateTimeOriginal (plant local time, +09:00), SubSecTimeOriginal (ms), OffsetTimeOriginal
``+09:00``.

MP4 (``camera="mp4"``): one H.264 (libx264; mpeg4 if missing) file per asset, time base
1/90000 s, pts = device time since the file's start, ``creation_time`` = device start.

>>> import numpy as np
>>> from mmdata.synth.config import SynthConfig
>>> from mmdata.synth.plan import build_plan
>>> p = build_plan(SynthConfig(assets=1, minutes=0.2))
>>> frame, tag = render_frame(p, p.assets[0], 0)
>>> frame.shape, frame.dtype.name
((240, 320, 3), 'uint8')
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mmdata.atomic import atomic_path, write_bytes
from mmdata.synth.clocks import (
    DEVICE_CODES,
    P_FRAME,
    SYNC_FLASH_NS,
    exif_time,
    file_stamp,
    grid_times,
    iso_utc_ns,
    rng_for,
)
from mmdata.synth.plan import AssetPlan, FactoryPlan
from mmdata.timebase import NS_PER_S

FONT_PATH = Path(__file__).with_name("fonts") / "DejaVuSansMono-Bold.ttf"
MAKE = "InspectCam"
MODEL = "IC-320"
JPEG_QUALITY = 85
MP4_TIME_BASE = Fraction(1, 90_000)
BELT_SPEED = 0.14  # image widths per second
PART_SPACING = 0.36  # image widths between part centres
SCRATCH_RGB = (22, 22, 24)


@dataclass(frozen=True)
class NameTag:
    """A badge visible in one frame (pixel boxes, x1/y1 exclusive).

    >>> NameTag("J. SMITH", (10, 20, 90, 35), (6, 16, 95, 40)).bbox[2]
    90
    """

    text: str
    bbox: tuple[int, int, int, int]
    badge_bbox: tuple[int, int, int, int]


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if FONT_PATH.exists():
        return ImageFont.truetype(str(FONT_PATH), size)
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=4)
def background(width: int, height: int) -> Image.Image:
    """The static part of the scene (wall, sign, gantry, belt), rendered once per size.

    >>> background(320, 240).size
    (320, 240)
    """
    w, h = width, height
    rows = np.linspace(0.0, 1.0, h)[:, None]
    wall = np.array([118, 124, 132]) + rows * np.array([32, 30, 28])
    arr = np.broadcast_to(wall[:, None, :], (h, w, 3)).copy()
    arr[int(0.5 * h) :, :, :] = (95, 92, 88)  # floor
    img = Image.fromarray(arr.astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    # wall sign (static, non-PII text)
    sx, sy = int(0.04 * w), int(0.05 * h)
    sign_font = _font(max(8, h // 24))
    _, _, x1, y1 = d.textbbox((sx + 4, sy + 3), "LINE-2 ST-04", font=sign_font)
    d.rectangle((sx, sy, x1 + 4, y1 + 4), fill=(40, 90, 60))
    d.text((sx + 4, sy + 3), "LINE-2 ST-04", fill=(235, 235, 235), font=sign_font)
    # conveyor belt with rails and rollers
    y0, y1 = int(0.56 * h), int(0.80 * h)
    d.rectangle((0, y0, w, y1), fill=(62, 64, 68))
    d.rectangle((0, y0 - 3, w, y0), fill=(150, 150, 155))
    d.rectangle((0, y1, w, y1 + 4), fill=(48, 48, 52))
    r = max(3, h // 60)
    for x in range(r, w, 4 * r):
        d.ellipse((x - r, y1 + 4, x + r, y1 + 4 + 2 * r), fill=(80, 80, 84))
    # gantry
    for px in (0.38, 0.62):
        x = int(px * w)
        d.rectangle(
            (x - int(0.015 * w), int(0.12 * h), x + int(0.015 * w), y0 - 3), fill=(70, 72, 78)
        )
    d.rectangle((int(0.36 * w), int(0.12 * h), int(0.64 * w), int(0.17 * h)), fill=(70, 72, 78))
    d.rectangle(_led_box(w, h), fill=(96, 96, 86))
    return img


def _led_box(w: int, h: int) -> tuple[int, int, int, int]:
    return int(0.40 * w), int(0.17 * h), int(0.60 * w), int(0.19 * h)


def _part_hash(k: int, salt: int) -> int:
    return ((k * 0x9E3779B1) ^ (salt * 0x85EBCA77)) & 0xFFFFFFFF


def _draw_parts(
    d: ImageDraw.ImageDraw, w: int, h: int, t_s: float, scratch: bool, salt: int
) -> None:
    spacing = PART_SPACING * w
    travel = BELT_SPEED * w * t_s + w  # + w: the belt is already loaded at the start
    cy = int(0.68 * h)
    size = 0.07 * h
    k_lo = max(0, int(np.ceil((travel - w - 2 * size) / spacing)))
    k_hi = int(np.floor((travel + 2 * size) / spacing))
    for k in range(k_lo, k_hi + 1):
        cx = travel - k * spacing
        hv = _part_hash(k, salt)
        grey = 172 + hv % 28
        fill = (grey, grey, grey + 4)
        if hv & 0x100:
            box = (cx - size, cy - size, cx + size, cy + size)
            d.ellipse(box, fill=fill, outline=(120, 120, 124))
            d.ellipse(
                (cx - size / 3, cy - size / 3, cx + size / 3, cy + size / 3), fill=(90, 90, 94)
            )
        else:
            box = (cx - 1.5 * size, cy - 0.9 * size, cx + 1.5 * size, cy + 0.9 * size)
            d.rectangle(box, fill=fill, outline=(120, 120, 124))
        if scratch:
            tilt = ((hv >> 12) % 100) / 100.0 - 0.5
            d.line(
                (
                    cx - 0.9 * size,
                    cy - (0.5 + tilt) * size * 0.8,
                    cx + 0.9 * size,
                    cy + (0.5 - tilt) * size * 0.8,
                ),
                fill=SCRATCH_RGB,
                width=max(3, h // 80),
            )


def _draw_operator(d: ImageDraw.ImageDraw, w: int, h: int, cx: float, name: str) -> NameTag:
    font = _font(max(12, h // 13))
    tx0, ty0, tx1, ty1 = d.textbbox((0, 0), name, font=font)
    tw, th = tx1 - tx0, ty1 - ty0
    pad = max(4, h // 50)
    half_badge = tw / 2 + pad + 2
    cx = min(max(cx, half_badge), w - half_badge)  # the badge is always fully in view
    half = 0.19 * w
    d.rounded_rectangle(
        (cx - half, 0.30 * h, cx + half, h + 20), radius=int(0.06 * w), fill=(40, 70, 130)
    )
    d.ellipse((cx - 0.085 * w, 0.03 * h, cx + 0.085 * w, 0.31 * h), fill=(205, 170, 140))
    d.chord((cx - 0.09 * w, 0.0, cx + 0.09 * w, 0.2 * h), 180, 360, fill=(230, 200, 40))
    bx0 = round(cx - tw / 2) - pad
    by0 = int(0.45 * h)
    badge = (bx0, by0, bx0 + int(tw) + 2 * pad, by0 + int(th) + 2 * pad)
    d.line((cx, 0.31 * h, cx, by0), fill=(200, 40, 40), width=2)  # lanyard
    d.rectangle(badge, fill=(240, 240, 232), outline=(60, 60, 60))
    ox, oy = bx0 + pad - tx0, by0 + pad - ty0
    d.text((ox, oy), name, fill=(15, 15, 20), font=font)
    x0, y0, x1, y1 = (int(v) for v in d.textbbox((ox, oy), name, font=font))
    return NameTag(name, (x0, y0, x1, y1), (bx0, by0, badge[2] + 1, badge[3] + 1))


def frame_times(
    plan: FactoryPlan, asset: AssetPlan, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """Device and reference times (int64 ns) of frames ``lo .. hi-1``.

    >>> from mmdata.synth.config import SynthConfig
    >>> from mmdata.synth.plan import build_plan
    >>> p = build_plan(SynthConfig(assets=1, minutes=0.2))
    >>> dev, ref = frame_times(p, p.assets[0], 0, 3)
    >>> np.diff(dev).tolist()
    [500000000, 500000000]
    """
    cam = asset.devices["camera"]
    rate = plan.camera_rate
    dev = grid_times(
        cam.span.device_start_ns,
        np.arange(lo, hi, dtype=np.int64),
        rate.numerator,
        rate.denominator,
    )
    return dev, cam.clock.to_reference(dev)


def frame_count(plan: FactoryPlan, asset: AssetPlan) -> int:
    """Frames the camera of ``asset`` takes.

    >>> from mmdata.synth.config import SynthConfig
    >>> from mmdata.synth.plan import build_plan
    >>> p = build_plan(SynthConfig(assets=1, minutes=0.5))
    >>> 60 <= frame_count(p, p.assets[0]) <= 62
    True
    """
    rate = plan.camera_rate
    return asset.devices["camera"].span.sample_count(rate.numerator, rate.denominator)


def render_frame(plan: FactoryPlan, asset: AssetPlan, i: int) -> tuple[np.ndarray, NameTag | None]:
    """Frame ``i`` of ``asset`` as an RGB uint8 array, plus the name tag in it (if any).

    >>> from mmdata.synth.config import SynthConfig
    >>> from mmdata.synth.plan import build_plan
    >>> p = build_plan(SynthConfig(assets=1, minutes=0.2, image_width=160, image_height=120))
    >>> render_frame(p, p.assets[0], 3)[0].shape
    (120, 160, 3)
    """
    cfg = plan.config
    w, h = cfg.image_width, cfg.image_height
    _, ref_arr = frame_times(plan, asset, i, i + 1)
    ref = int(ref_arr[0])
    t_s = (ref - plan.start_ns) * 1e-9
    img = background(w, h).copy()
    d = ImageDraw.Draw(img)
    scratch = any(
        f.fault_class == "surface_scratch" and f.start_ns <= ref < f.end_ns for f in asset.faults
    )
    _draw_parts(d, w, h, t_s, scratch, cfg.seed * 131 + asset.index)
    j = int(np.searchsorted(plan.sync_ns, ref, side="right")) - 1
    flash = j >= 0 and ref - int(plan.sync_ns[j]) < SYNC_FLASH_NS
    if flash:
        d.rectangle(_led_box(w, h), fill=(255, 255, 240))
    tag: NameTag | None = None
    for p in asset.name_passes:
        if p.start_ns <= ref < p.end_ns:
            cx = (p.x_frac + p.drift_frac_s * (ref - p.start_ns) * 1e-9) * w
            tag = _draw_operator(d, w, h, cx, p.name)
            break
    rng = rng_for(cfg.seed, asset.index, DEVICE_CODES["camera"], P_FRAME, i)
    gain = 1.0 + 0.01 * float(rng.standard_normal())
    if flash:
        gain *= 1.45
    noise = rng.integers(-3, 4, (h, w, 1), dtype=np.int16)
    arr = np.asarray(img, dtype=np.int16)
    if gain != 1.0:
        arr = (arr * gain).astype(np.int16)
    arr = np.clip(arr + noise, 0, 255).astype(np.uint8)
    return arr, tag


def _exif(ts_ns: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = MAKE
    exif[0x0110] = MODEL
    exif[0x0131] = "IC-320 fw 1.4.2"  # Software
    date, subsec = exif_time(ts_ns)
    exif[0x0132] = date  # DateTime (IFD0)
    ifd = exif.get_ifd(0x8769)
    ifd[0x9003] = date  # DateTimeOriginal
    ifd[0x9291] = subsec  # SubSecTimeOriginal
    ifd[0x9011] = "+09:00"  # OffsetTimeOriginal
    return exif


def jpeg_name(device: str, ts_ns: int) -> str:
    """File name of a frame taken at device time ``ts_ns``.

    >>> jpeg_name("cam-press-1", 1772352000500000000)
    'cam-press-1_20260301T080000.500Z.jpg'
    """
    return f"{device}_{file_stamp(ts_ns)}.jpg"


def _tag_json(
    tag: NameTag, device: str, ts: int, ref: int, where: dict[str, Any]
) -> dict[str, Any]:
    return {
        "device": device,
        **where,
        "ts_ns": ts,
        "reference_ns": ref,
        "entity": "PERSON",
        "text": tag.text,
        "bbox": list(tag.bbox),
        "badge_bbox": list(tag.badge_bbox),
    }


def write_jpeg_frames(
    plan: FactoryPlan, asset: AssetPlan, lo: int, hi: int, out_dir: Path
) -> dict[str, Any]:
    """Write frames ``lo .. hi-1`` as JPEG files; return file entries and name-tag truth.

    >>> import tempfile
    >>> from mmdata.synth.config import SynthConfig
    >>> from mmdata.synth.plan import build_plan
    >>> p = build_plan(SynthConfig(assets=1, minutes=0.2))
    >>> r = write_jpeg_frames(p, p.assets[0], 0, 2, Path(tempfile.mkdtemp()))
    >>> [f["samples"] for f in r["files"]]
    [1, 1]
    """
    cam = asset.devices["camera"]
    dev, ref = frame_times(plan, asset, lo, hi)
    files: list[dict[str, Any]] = []
    tags: list[dict[str, Any]] = []
    nbytes = 0
    for n, i in enumerate(range(lo, hi)):
        arr, tag = render_frame(plan, asset, i)
        ts = int(dev[n])
        rel = f"{asset.asset}/cam/{jpeg_name(cam.device, ts)}"
        buf = io.BytesIO()
        Image.fromarray(arr, "RGB").save(buf, "JPEG", quality=JPEG_QUALITY, exif=_exif(ts))
        data = buf.getvalue()
        write_bytes(out_dir / rel, data)
        nbytes += len(data)
        files.append({"path": rel, "first_ts_ns": ts, "last_ts_ns": ts, "samples": 1})
        if tag is not None:
            tags.append(_tag_json(tag, cam.device, ts, int(ref[n]), {"file": rel}))
    return {"files": files, "image_pii": tags, "bytes": nbytes, "frames": hi - lo}


def _encoder_name() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _video_stream(box: Any, plan: FactoryPlan, codec: str) -> Any:
    import av

    cfg = plan.config
    stream = box.add_stream(codec, rate=plan.camera_rate)
    assert isinstance(stream, av.VideoStream)
    stream.width, stream.height = cfg.image_width, cfg.image_height
    stream.pix_fmt = "yuv420p"
    stream.time_base = MP4_TIME_BASE
    stream.codec_context.time_base = MP4_TIME_BASE
    stream.codec_context.thread_count = 1  # deterministic bytes on any machine
    if codec == "libx264":
        keyint = str(max(1, round(cfg.camera_fps * 10)))
        stream.options = {"crf": "23", "preset": "veryfast", "threads": "1", "bf": "0", "g": keyint}
    stream.codec_context.flags |= int(av.codec.context.Flags.bitexact)
    return stream


def write_mp4(plan: FactoryPlan, asset: AssetPlan, out_dir: Path) -> dict[str, Any]:
    """Write the whole recording of ``asset``'s camera as one MP4; return truth entries.

    >>> import tempfile
    >>> from mmdata.synth.config import SynthConfig
    >>> from mmdata.synth.plan import build_plan
    >>> p = build_plan(SynthConfig(assets=1, minutes=0.05, camera="mp4"))
    >>> r = write_mp4(p, p.assets[0], Path(tempfile.mkdtemp()))
    >>> r["files"][0]["samples"] == len(r["files"][0]["frame_ts_ns"]) >= 6
    True
    """
    import av

    cam = asset.devices["camera"]
    n = frame_count(plan, asset)
    dev, ref = frame_times(plan, asset, 0, n)
    start = cam.span.device_start_ns
    rel = f"{asset.asset}/cam/{cam.device}_{file_stamp(start)}.mp4"
    codec = _encoder_name()
    tags: list[dict[str, Any]] = []
    ticks = MP4_TIME_BASE.denominator
    pts_all = [((int(d) - start) * ticks + NS_PER_S // 2) // NS_PER_S for d in dev]
    with (
        atomic_path(out_dir / rel) as tmp,
        av.open(str(tmp), mode="w", format="mp4", options={"fflags": "+bitexact"}) as box,
    ):
        box.metadata["creation_time"] = iso_utc_ns(start)[:19] + ".000000Z"
        box.metadata["title"] = cam.device
        box.metadata["comment"] = (
            f"{MAKE} {MODEL}; device_start_ns={start}; pts = device time since then"
        )
        stream = _video_stream(box, plan, codec)
        for i in range(n):
            arr, tag = render_frame(plan, asset, i)
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format="yuv420p")
            frame.pts = pts_all[i]
            frame.time_base = MP4_TIME_BASE
            for packet in stream.encode(frame):
                box.mux(packet)
            if tag is not None:
                where = {"file": rel, "frame_index": i}
                tags.append(_tag_json(tag, cam.device, int(dev[i]), int(ref[i]), where))
        for packet in stream.encode(None):
            box.mux(packet)
    size = (out_dir / rel).stat().st_size
    entry = {
        "path": rel,
        "first_ts_ns": int(dev[0]),
        "last_ts_ns": int(dev[-1]),
        "samples": n,
        "codec": codec,
        "time_base": f"1/{MP4_TIME_BASE.denominator}",
        "frame_ts_ns": [int(x) for x in dev],
    }
    return {"files": [entry], "image_pii": tags, "bytes": size, "frames": n}

"""Camera connector: JPEG/PNG frames indexed from their headers, timed by name or EXIF."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from connectors.camera import CameraOptions
from connectors.imageheader import read_header
from mmdata.synth import SynthConfig, generate_factory

from .conftest import counts, ingest_one

S = 1_000_000_000
T0 = 1_772_352_000 * S  # 2026-03-01T08:00:00Z
NAME = "cam_%Y%m%dT%H%M%S.%fZ"


def exif_block(
    dto: str | None = "2026:03:01 17:00:00",
    subsec: str | None = "250",
    offset: str | None = "+09:00",
    *,
    orientation: int | None = None,
    big_endian: bool = False,
) -> Image.Exif:
    """An EXIF block as a camera writes it (Pillow builds the TIFF structure)."""
    exif = Image.Exif()
    exif.endian = ">" if big_endian else "<"  # Pillow writes "MM" when endian is unset
    exif[0x010F] = "TestCam"
    if orientation is not None:
        exif[0x0112] = orientation
    ifd = exif.get_ifd(0x8769)
    for tag, value in ((0x9003, dto), (0x9291, subsec), (0x9011, offset)):
        if value is not None:
            ifd[tag] = value
    return exif


def encode(size: tuple[int, int] = (64, 48), fmt: str = "JPEG", exif: Image.Exif | None = None,
           **save) -> bytes:  # fmt: skip
    """A real image file made by Pillow's encoders."""
    rng = np.random.default_rng(size[0] * 7919 + size[1])
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    kwargs = dict(save)
    if exif is not None:
        kwargs["exif"] = exif
    Image.fromarray(arr, "RGB").save(buf, fmt, **kwargs)
    return buf.getvalue()


def name_at(ts_ns: int, ext: str = "jpg") -> str:
    import datetime as dt

    d = dt.datetime.fromtimestamp(ts_ns // S, dt.UTC)
    return f"cam_{d:%Y%m%dT%H%M%S}.{(ts_ns % S) // 1_000_000:03d}Z.{ext}"


def patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """Overwrite the dimensions in a real JPEG's SOF0 frame header."""
    at = data.index(b"\xff\xc0")
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def patch_png_size(data: bytes, width: int, height: int) -> bytes:
    """Overwrite the dimensions in a real PNG's IHDR (with a valid CRC, as a liar would)."""
    ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


# --- the header parser -------------------------------------------------------------------


def test_header_parser_agrees_with_pillow_on_random_real_files():
    rnd = random.Random(7)
    for n in range(300):
        fmt = rnd.choice(["JPEG", "PNG"])
        if n % 5 == 0:  # wide/tall strips exercise all 16 bits of the size fields
            w = rnd.randint(1, 65_000) if fmt == "JPEG" else rnd.randint(1, 200_000)
            size = (w, rnd.randint(1, 3)) if n % 2 else (rnd.randint(1, 3), min(w, 65_000))
        else:
            size = (rnd.randint(1, 300), rnd.randint(1, 300))
        exif = None
        if rnd.random() < 0.8:
            exif = exif_block(
                f"20{rnd.randint(10, 39)}:{rnd.randint(1, 12):02d}:{rnd.randint(1, 28):02d} "
                f"{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}",
                rnd.choice([None, "5", "25", "123456"]),
                rnd.choice([None, "+09:00", "-05:30", "+00:00"]),
                orientation=rnd.choice([None, *range(1, 9)]),
                big_endian=rnd.random() < 0.5,
            )
        extra = {"progressive": True} if fmt == "JPEG" and rnd.random() < 0.3 else {}
        data = encode(size, fmt, exif, **extra)
        ours = read_header(data)
        with Image.open(io.BytesIO(data)) as im:
            assert (ours.width, ours.height) == im.size, n
            assert ours.format == fmt.lower()
            theirs = im.getexif()
            info = ours.exif()
            if exif is None:
                assert info is None
                continue
            assert info is not None
            sub = theirs.get_ifd(0x8769)
            assert info.datetime_original == sub.get(0x9003)
            assert info.subsec_original == sub.get(0x9291)
            assert info.offset_original == sub.get(0x9011)
            assert info.orientation == theirs.get(0x0112)


def test_both_exif_byte_orders_are_read(tmp_path):
    (tmp_path / "le.jpg").write_bytes(encode(exif=exif_block(subsec="1", big_endian=False)))
    (tmp_path / "be.png").write_bytes(
        encode(fmt="PNG", exif=exif_block(subsec="2", big_endian=True))
    )
    assert encode(exif=exif_block(big_endian=True)).find(b"Exif\x00\x00MM") > 0
    assert encode(exif=exif_block(big_endian=False)).find(b"Exif\x00\x00II") > 0
    got = ingest_one(tmp_path, "camera", tmp_path, timestamp={"exif": True})
    assert got.streams["frames"].column("ts_ns").to_pylist() == [T0 + S // 10, T0 + S // 5]


# --- times ------------------------------------------------------------------------------


def test_filename_and_exif_times_match_the_synthetic_factory(tmp_path):
    out = tmp_path / "factory"
    generate_factory(SynthConfig(assets=1, minutes=0.2, workers=1), out)
    truth = json.loads((out / "ground_truth.json").read_text())
    files = truth["devices"]["cam-press-1"]["files"]
    expected = [f["first_ts_ns"] for f in files]
    cam = out / "press-1" / "cam"
    by_name = ingest_one(tmp_path, "camera", cam,
                         timestamp={"filename": "cam-press-1_%Y%m%dT%H%M%S.%fZ"})  # fmt: skip
    by_exif = ingest_one(tmp_path, "camera", cam, timestamp={"exif": True})
    for got, source in ((by_name, "filename"), (by_exif, "exif")):
        t = got.streams["frames"]
        assert counts(got).out == len(files) and not got.quarantine
        assert t.column("ts_ns").to_pylist() == expected
        assert set(t.column("ts_source").to_pylist()) == {source}
        assert set(zip(t.column("width").to_pylist(), t.column("height").to_pylist(),
                       strict=True)) == {(320, 240)}  # fmt: skip
        assert [Path(u).name for u in t.column("uri").to_pylist()] == [
            Path(f["path"]).name for f in files
        ]
        assert got.index["frames"]["meta"]["kind"] == "camera"


def test_exif_without_offset_uses_tz_and_is_quarantined_without_it(tmp_path):
    d = tmp_path / "cam"
    d.mkdir()
    (d / "a.jpg").write_bytes(encode(exif=exif_block("2026:03:01 17:00:01", "5", None)))
    (d / "b.jpg").write_bytes(encode(exif=exif_block("2026:03:01 17:00:02", None, "+09:00")))
    (d / "c.png").write_bytes(encode(fmt="PNG"))  # no EXIF at all
    with_tz = ingest_one(tmp_path, "camera", d, timestamp={"exif": True, "tz": "Asia/Tokyo"})
    assert with_tz.streams["frames"].column("ts_ns").to_pylist() == [T0 + S + S // 2, T0 + 2 * S]
    assert with_tz.reasons() == ["no usable timestamp (exif: the file has no EXIF block)\n"
                                 "  fix: check the source's timestamp option (file-name pattern, "
                                 "EXIF, tz)"]  # fmt: skip
    without = ingest_one(tmp_path, "camera", d, timestamp={"exif": True})
    assert without.streams["frames"].column("ts_ns").to_pylist() == [T0 + 2 * S]
    assert any("no OffsetTimeOriginal and no time zone" in r for r in without.reasons())


def test_fallback_takes_the_second_source_and_flags_it(tmp_path):
    d = tmp_path / "cam"
    d.mkdir()
    (d / name_at(T0 + 3 * S)).write_bytes(encode(exif=exif_block()))
    (d / "IMG_0001.jpg").write_bytes(encode(exif=exif_block("2026:03:01 17:00:01", "0")))
    got = ingest_one(tmp_path, "camera", d, timestamp={"filename": NAME, "fallback": "exif"})
    t = got.streams["frames"]
    assert t.column("ts_ns").to_pylist() == [T0 + S, T0 + 3 * S]
    assert t.column("ts_source").to_pylist() == ["exif", "filename"]
    assert got.index["frames"]["flags"]["timestamp_fallback"] == 1
    reverse = ingest_one(tmp_path, "camera", d, timestamp={
        "exif": True, "filename": NAME, "fallback": "filename"})  # fmt: skip
    assert reverse.streams["frames"].column("ts_source").to_pylist() == ["exif", "exif"]


def test_regex_timestamps_and_unparseable_names(tmp_path):
    d = tmp_path / "cam"
    d.mkdir()
    (d / f"frame_{T0 // 1_000_000 + 40}.png").write_bytes(encode(fmt="PNG"))
    (d / "frame_latest.png").write_bytes(encode((10, 10), fmt="PNG"))
    got = ingest_one(tmp_path, "camera", d, timestamp={"regex": r"frame_(?P<epoch_ms>\d+)"})
    assert got.streams["frames"].column("ts_ns").to_pylist() == [T0 + 40_000_000]
    (reason,) = got.reasons()
    assert "does not match the time pattern" in reason and "frame_latest.png" in reason


def test_timestamp_options_are_checked():
    CameraOptions(timestamp={"filename": NAME, "fallback": "exif"})
    for bad in ({}, {"filename": NAME, "regex": "x"}, {"exif": True, "filename": NAME},
                {"exif": True, "fallback": "exif"}, {"filename": NAME, "fallback": "filename"},
                {"exif": True, "tz": "Mars/Olympus"}):  # fmt: skip
        with pytest.raises(ValueError):  # noqa: PT011 - pydantic's and ConfigError both
            CameraOptions(timestamp=bad)
    assert CameraOptions().timestamp.exif  # the default: the camera's own EXIF record


# --- payload ----------------------------------------------------------------------------


def test_frames_are_references_unless_inline(tmp_path):
    d = tmp_path / "cam"
    d.mkdir()
    jpg, png = encode((33, 17)), encode((20, 30), "PNG")
    (d / name_at(T0)).write_bytes(jpg)
    (d / name_at(T0 + S, "png")).write_bytes(png)
    ref = ingest_one(tmp_path, "camera", d, timestamp={"filename": NAME})
    t = ref.streams["frames"]
    assert t.column("bytes").to_pylist() == [None, None]
    assert t.column("format").to_pylist() == ["jpeg", "png"]
    assert t.column("width").to_pylist() == [33, 20] and t.column("height").to_pylist() == [17, 30]
    assert str(t.schema.field("width").type) == "int32"
    shas = t.column("source_sha256").to_pylist()
    assert shas == [hashlib.sha256(x).hexdigest() for x in (jpg, png)]
    assert t.column("source_locator").to_pylist() == ["file", "file"]
    inline = ingest_one(tmp_path, "camera", d, timestamp={"filename": NAME}, inline=True)
    assert inline.streams["frames"].column("bytes").to_pylist() == [jpg, png]
    assert inline.index["frames"]["meta"] == {"kind": "camera", "inline": True}


def test_signature_decides_the_format_and_a_wrong_extension_is_flagged(tmp_path):
    d = tmp_path / "cam"
    d.mkdir()
    (d / name_at(T0)).write_bytes(encode(fmt="PNG"))  # PNG bytes named .jpg
    got = ingest_one(tmp_path, "camera", d, timestamp={"filename": NAME})
    assert got.streams["frames"].column("format").to_pylist() == ["png"]
    assert got.index["frames"]["flags"]["extension_mismatch"] == 1


def test_data_after_the_end_of_the_image_is_kept_and_flagged(tmp_path):
    d = tmp_path / "cam"
    d.mkdir()
    motion_video = encode((40, 30), "PNG")  # any real file appended after EOI, as phones do
    (d / name_at(T0)).write_bytes(encode(progressive=True) + motion_video)
    (d / name_at(T0 + S, "png")).write_bytes(encode(fmt="PNG") + b"maker-notes")
    (d / name_at(T0 + 2 * S)).write_bytes(encode() + b"\x00" * 64)  # NUL padding: normal
    got = ingest_one(tmp_path, "camera", d, timestamp={"filename": NAME})
    assert counts(got).out == 3
    assert got.index["frames"]["flags"] == {"trailing_data": 2}
    (d / name_at(T0 + 3 * S)).write_bytes(encode()[:-2] + b"junk")  # no EOI anywhere
    got = ingest_one(tmp_path, "camera", d, timestamp={"filename": NAME})
    assert "truncated JPEG: no EOI marker" in got.reasons()[0]


# --- bad input ----------------------------------------------------------------------------


def test_bad_files_are_quarantined_while_good_ones_ingest(tmp_path):
    root = tmp_path / "cam"
    root.mkdir()
    good_jpg, good_png = encode((64, 48), exif=exif_block()), encode((64, 48), "PNG")
    files = {
        name_at(T0): good_jpg,
        name_at(T0 + S, "png"): good_png,
        name_at(T0 + 2 * S): b"",  # zero bytes
        name_at(T0 + 3 * S): b"GIF89a" + good_png[6:],  # not a JPEG/PNG at all
        name_at(T0 + 4 * S): good_jpg[: len(good_jpg) // 2],  # cut short: no EOI
        name_at(T0 + 5 * S, "png"): good_png[: len(good_png) - 20],  # cut short: no IEND
        name_at(T0 + 6 * S): patch_jpeg_size(good_jpg, 60_000, 60_000),  # JPEG's max is 65535
        name_at(T0 + 7 * S, "png"): patch_png_size(good_png, 100_000, 100_000),
        "cam_not-a-time.jpg": good_jpg,
    }
    # a segment length that runs off the end: the marker structure breaks before SOF
    at = good_jpg.index(b"\xff\xe1")  # the APP1 (Exif) segment
    files[name_at(T0 + 8 * S)] = good_jpg[: at + 2] + b"\xff\xf0" + good_jpg[at + 4 :]
    for name, data in files.items():
        (root / name).write_bytes(data)
    outside = tmp_path / "elsewhere" / name_at(T0 + 9 * S)
    outside.parent.mkdir()
    outside.write_bytes(good_jpg)
    os.symlink(outside, root / name_at(T0 + 9 * S))

    got = ingest_one(tmp_path, "camera", root, timestamp={"filename": NAME},
                     follow_symlinks=True)  # fmt: skip
    assert got.streams["frames"].column("ts_ns").to_pylist() == [T0, T0 + S]
    reasons = {Path(r.source_ref).name: r.message for r in got.quarantine}
    expect = {
        name_at(T0 + 2 * S): "zero-byte file",
        name_at(T0 + 3 * S): "not a JPEG or PNG file",
        name_at(T0 + 4 * S): "truncated JPEG: no EOI marker",
        name_at(T0 + 5 * S, "png"): "truncated PNG",
        name_at(T0 + 6 * S): "image claims 60000×60000 = 3,600,000,000 pixels",
        name_at(T0 + 7 * S, "png"): "image claims 100000×100000",
        name_at(T0 + 8 * S): "corrupt JPEG: marker 0xE1",
        name_at(T0 + 9 * S): "outside the source root",
        "cam_not-a-time.jpg": "does not match the time pattern",
    }
    assert set(reasons) == set(expect)
    for name, text in expect.items():
        assert text in reasons[name], (name, reasons[name])
    assert counts(got).in_ == 11 and counts(got).out == 2 and counts(got).quarantined == 9

    # without follow_symlinks the link is refused as a symlink; a raised limit admits bombs
    strict = ingest_one(tmp_path, "camera", root, timestamp={"filename": NAME},
                        max_pixels=10**10)  # fmt: skip
    strict_reasons = {Path(r.source_ref).name: r.message for r in strict.quarantine}
    assert "symlink not followed" in strict_reasons[name_at(T0 + 9 * S)]
    assert counts(strict).out == 4


def test_damaged_exif_only_matters_when_exif_is_used(tmp_path):
    d = tmp_path / "cam"
    d.mkdir()
    data = bytearray(encode(exif=exif_block()))
    at = data.index(b"Exif\x00\x00") + 6
    data[at + 4 : at + 8] = struct.pack("<I", 50_000)  # IFD0 offset beyond the block
    (d / name_at(T0)).write_bytes(bytes(data))
    by_name = ingest_one(tmp_path, "camera", d, timestamp={"filename": NAME})
    assert counts(by_name).out == 1
    by_exif = ingest_one(tmp_path, "camera", d, timestamp={"exif": True})
    assert "corrupt EXIF: IFD0 offset 50000" in by_exif.reasons()[0]

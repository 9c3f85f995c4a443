"""The image scrubber: name tags read by OCR and boxed, faces blurred, metadata stripped.

Material is real: camera frames from the synthetic factory (name tags with ground-truth
boxes), Japanese text rendered with an installed CJK font, EXIF/XMP/ICC/IPTC written by
Pillow, and a real photograph for faces (scikit-image's astronaut, when available). The text
detector is a small name-list detector producing real findings; the scrub stage passes the
text scrubber's instead.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import struct
import subprocess
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin, TiffImagePlugin

from mmdata.config import ImageScrubConfig
from mmdata.errors import InputDataError
from mmdata.scrub.findings import Finding
from mmdata.scrub.image import ImageResult, scrub_image, scrub_images, strip_jpeg, strip_png
from mmdata.scrub.keys import keyed_hash
from mmdata.synth import SynthConfig, generate_factory
from mmdata.synth.plan import BADGE_NAMES

KEY = b"test-key-0123456789abcdef"
JA_NAMES = ("山田太郎", "佐藤花子", "鈴木一郎")
_LATIN = [
    re.compile(rf"(?<![A-Za-z]){re.escape(n[0])}\.?\s*{re.escape(n.split()[-1])}(?![A-Za-z])", re.I)
    for n in (*BADGE_NAMES, "J. DOE")
]


def names(text: str, lang: str | None) -> list[Finding]:
    """A real (if small) detector: the factory's badge names and a few Japanese names."""
    spans = [m.span() for p in _LATIN for m in p.finditer(text)]
    spans += [(m.start(), m.end()) for n in JA_NAMES for m in re.finditer(re.escape(n), text)]
    return [
        Finding(modality="text", entity="PERSON", score=0.9, recognizer="name-list",
                operator="pseudonym", original_hash="", start=s, end=e, model="test names v1")
        for s, e in spans
    ]  # fmt: skip


def covers(outer: tuple[int, ...] | None, inner: list[int] | tuple[int, ...]) -> bool:
    assert outer is not None
    return all(outer[k] <= inner[k] for k in (0, 1)) and all(outer[k] >= inner[k] for k in (2, 3))


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def scan_data(jpeg: bytes) -> bytes:
    """Everything from the first SOS marker on: the compressed pixels."""
    return jpeg[jpeg.index(b"\xff\xda") :]


def has_metadata(data: bytes) -> bool:
    img = Image.open(io.BytesIO(data))
    meta = {"exif", "icc_profile", "xmp", "comment", "photoshop"} & set(img.info)
    return bool(meta) or len(img.getexif()) > 0 or bool(getattr(img, "text", {}))


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("factory")
    generate_factory(SynthConfig(assets=1, minutes=3, workers=1), out)
    truth = json.loads((out / "ground_truth.json").read_text())
    assert len(truth["image_pii"]) >= 10
    return out, truth


# ------------------------------------------------------------------ name tags (factory)


def test_every_name_tag_is_read_flagged_and_boxed_over_its_ground_truth(factory):
    root, truth = factory
    cfg = ImageScrubConfig()
    for tag in truth["image_pii"]:
        data = (root / tag["file"]).read_bytes()
        res = scrub_image(data, cfg, names, KEY, field="frames[0]")
        people = [f for f in res.findings if f.entity == "PERSON"]
        assert len(people) == 1, (tag["text"], res.findings)
        f = people[0]
        assert (f.modality, f.operator, f.field) == ("image", "redact", "frames[0]")
        assert f.recognizer == "tesseract+name-list" and str(f.model).startswith("tesseract 5")
        assert f.original_hash == keyed_hash(KEY, tag["text"])  # OCR read it exactly
        assert covers(f.bbox, tag["bbox"]), (f.bbox, tag["bbox"])
        x0, y0, x1, y1 = tag["bbox"]
        assert pixels(res.data)[y0:y1, x0:x1].max() < 40  # black, through JPEG re-encoding
        assert res.changed and res.format == "JPEG" and not has_metadata(res.data)
        assert tag["text"] not in json.dumps([x.to_dict() for x in res.findings])
        again = scrub_image(res.data, cfg, names, KEY)  # what the audit re-scan sees
        assert [x for x in again.findings if x.entity == "PERSON"] == []


def test_a_batch_reads_every_tag_in_shared_ocr_calls_and_isolates_a_bad_frame(factory, monkeypatch):
    import mmdata.scrub.ocr as ocr

    root, truth = factory
    calls: list[int] = []
    real = ocr._tesseract_tsv

    def counted(*a: object) -> dict[str, list[str]]:
        calls.append(1)
        return real(*a)  # type: ignore[arg-type]

    monkeypatch.setattr(ocr, "_tesseract_tsv", counted)
    tags = truth["image_pii"][:12]
    datas = [(root / t["file"]).read_bytes() for t in tags]
    datas.insert(5, datas[0][: len(datas[0]) // 3])  # a truncated frame in the middle
    out = scrub_images(datas, ImageScrubConfig(), names, KEY)
    assert isinstance(out[5], InputDataError) and "decode" in out[5].message
    good = out[:5] + out[6:]
    assert len(calls) == 1  # twelve frames' text lines in one tesseract call
    for tag, res in zip(tags, good, strict=True):
        assert isinstance(res, ImageResult)
        people = [f for f in res.findings if f.entity == "PERSON"]
        assert [f.original_hash for f in people] == [keyed_hash(KEY, tag["text"])]
        assert covers(people[0].bbox, tag["bbox"])


def test_frames_without_pii_keep_their_pixel_data_and_lose_only_the_camera_exif(factory):
    root, truth = factory
    tagged = {t["file"] for t in truth["image_pii"]}
    files = sorted(
        p for p in root.glob("press-1/cam/*.jpg") if str(p.relative_to(root)) not in tagged
    )
    for path in files[:: max(1, len(files) // 12)]:
        data = path.read_bytes()
        res = scrub_image(data, ImageScrubConfig(), names, KEY)
        assert res.findings == []  # Make/Model/DateTimeOriginal are not personal
        assert res.changed and res.stripped == ("exif",)
        assert scan_data(res.data) == scan_data(data)  # compressed pixels byte-for-byte
        assert not has_metadata(res.data)
        assert (pixels(res.data) == pixels(data)).all()


def test_an_image_without_metadata_or_findings_comes_back_as_the_same_bytes(factory):
    root, _ = factory
    clean, _ = strip_jpeg(next(root.glob("press-1/cam/*.jpg")).read_bytes())
    res = scrub_image(clean, ImageScrubConfig(), names, KEY)
    assert res == ImageResult(clean, [], False, "JPEG", 320, 240)
    assert res.data is clean


def test_a_keep_operator_is_reported_but_not_boxed(factory):
    root, truth = factory
    tag = truth["image_pii"][0]

    def keep(text: str, lang: str | None) -> list[Finding]:
        return [dataclasses.replace(f, operator="keep") for f in names(text, lang)]

    data = (root / tag["file"]).read_bytes()
    res = scrub_image(data, ImageScrubConfig(), keep, KEY)
    assert [f.operator for f in res.findings] == ["keep"]
    assert res.stripped == ("exif",) and scan_data(res.data) == scan_data(data)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_name_tags_are_boxed_whatever_the_pixel_format(factory, mode):
    root, truth = factory
    tag = truth["image_pii"][0]
    rgb = Image.open(root / tag["file"]).convert("RGB")
    if mode == "I;16":
        img = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    elif mode == "P":
        img = rgb.quantize(64, dither=Image.Dither.NONE)
    else:
        img = rgb.convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG" if mode == "CMYK" else "PNG")
    res = scrub_image(buf.getvalue(), ImageScrubConfig(), names, KEY)
    (person,) = [f for f in res.findings if f.entity == "PERSON"]
    assert covers(person.bbox, tag["bbox"])
    x0, y0, x1, y1 = tag["bbox"]
    out = Image.open(io.BytesIO(res.data))
    assert out.size == img.size and res.format == ("JPEG" if mode == "CMYK" else "PNG")
    assert np.asarray(out.convert("L"))[y0:y1, x0:x1].max() < 40


def test_a_multi_picture_jpeg_keeps_only_its_first_picture(factory):
    root, _ = factory
    first, second = (
        Image.open(p).convert("RGB") for p in sorted(root.glob("press-1/cam/*.jpg"))[:2]
    )
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[second])
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).format == "MPO"
    res = scrub_image(data, ImageScrubConfig(), names, KEY)
    assert "mpf" in res.stripped and "trailer" in res.stripped
    out = Image.open(io.BytesIO(res.data))
    assert out.format == "JPEG" and getattr(out, "n_frames", 1) == 1 and not has_metadata(res.data)
    assert len(res.data) < len(data) // 2 + 1000


# ------------------------------------------------------------------ Japanese text


def _cjk_font() -> str | None:
    if os.environ.get("MMDATA_TEST_CJK_FONT"):
        return os.environ["MMDATA_TEST_CJK_FONT"]
    try:
        out = subprocess.run(["fc-list", ":lang=ja", "file"], capture_output=True, text=True,
                             check=False, timeout=30).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    files = sorted(line.split(":")[0] for line in out.splitlines() if line.strip())
    return files[0] if files else None


@pytest.mark.parametrize(("size", "text", "name"), [
    (16, "担当 山田太郎", "山田太郎"), (20, "作業者：佐藤花子", "佐藤花子"),
    (28, "点検 鈴木一郎 確認", "鈴木一郎"),
])  # fmt: skip
def test_japanese_names_are_boxed_with_a_character_of_padding(size, text, name):
    font_path = _cjk_font()
    if font_path is None:
        pytest.skip("no Japanese font installed (fc-list :lang=ja is empty): apt-get install "
                    "fonts-ipafont-gothic, or set MMDATA_TEST_CJK_FONT")  # fmt: skip
    font = ImageFont.truetype(font_path, size)
    img = Image.new("RGB", (320, 240), (120, 125, 130))
    d = ImageDraw.Draw(img)
    bx = d.textbbox((20, 100), text, font=font)
    d.rectangle((bx[0] - 6, bx[1] - 6, bx[2] + 6, bx[3] + 6), fill=(240, 240, 232))
    d.text((20, 100), text, fill=(15, 15, 20), font=font)
    gt = d.textbbox((20 + d.textlength(text[: text.index(name)], font=font), 100), name, font=font)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    res = scrub_image(buf.getvalue(), ImageScrubConfig(), names, KEY)
    people = [f for f in res.findings if f.entity == "PERSON"]
    assert [f.original_hash for f in people] == [keyed_hash(KEY, name)]
    assert covers(people[0].bbox, [int(gt[0]), int(gt[1]), int(np.ceil(gt[2])), int(gt[3])])
    out = pixels(res.data)
    x0, y0, x1, y1 = (int(v) for v in gt)
    assert (out[y0:y1, x0:x1] == 0).all()  # PNG: exactly black
    label = d.textbbox((20, 100), text[: text.index(name)].rstrip(" ："), font=font)
    assert out[label[1] : label[3], label[0] : label[0] + size // 2].max() > 0  # label kept


# ------------------------------------------------------------------ faces


def _face_photo() -> np.ndarray | None:
    path = os.environ.get("MMDATA_TEST_FACE_IMAGE")
    if path:
        return np.asarray(Image.open(path).convert("RGB"))
    try:
        from skimage import data
    except ImportError:
        return None
    return np.asarray(data.astronaut())


def _edges(rgb: np.ndarray) -> float:
    gray = cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


@pytest.mark.parametrize("mode", ["blur", "box"])
def test_a_real_face_is_found_and_made_unrecognisable(mode):
    photo = _face_photo()
    if photo is None:
        pytest.skip("no real face photo: no package here ships one (scikit-image's "
                    "data.astronaut() would; or set MMDATA_TEST_FACE_IMAGE)")  # fmt: skip
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG")
    res = scrub_image(buf.getvalue(), ImageScrubConfig(faces=mode, ocr=[]), names, KEY)
    faces = [f for f in res.findings if f.entity == "FACE"]
    assert faces and all(f.operator == mode and f.original_hash == "" for f in faces)
    assert faces[0].recognizer == "opencv-haar-frontalface_default"
    assert str(faces[0].model).startswith(f"opencv {cv2.__version__}") and 0.5 <= faces[0].score < 1
    before, after = photo.astype(np.int16), pixels(res.data)
    outside = np.ones(photo.shape[:2], bool)
    for f in faces:
        assert f.bbox is not None
        x0, y0, x1, y1 = f.bbox
        outside[y0:y1, x0:x1] = False
        region = after[y0:y1, x0:x1]
        if mode == "box":
            assert (region == 0).all()
        else:  # no edges left: the Laplacian's energy collapses
            lap = [_edges(r) for r in (before[y0:y1, x0:x1], region)]
            assert lap[1] < 0.02 * lap[0]
    assert (after[outside] == before[outside]).all()  # PNG: the rest is untouched
    again = scrub_image(res.data, ImageScrubConfig(faces=mode, ocr=[]), names, KEY)
    assert [f for f in again.findings if f.entity == "FACE"] == []


def test_factory_frames_do_not_produce_false_faces(factory):
    root, _ = factory
    for path in sorted(root.glob("press-1/cam/*.jpg"))[::10]:
        res = scrub_image(path.read_bytes(), ImageScrubConfig(ocr=[]), names, KEY)
        assert [f for f in res.findings if f.entity == "FACE"] == []


# ------------------------------------------------------------------ metadata


def _rich_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "InspectCam"  # Make: stripped silently
    exif[0x013B] = "J. Doe"  # Artist
    exif[0x8298] = "(c) J. Doe"  # Copyright
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (35.0, 39.0, 29.0), 3: "E", 4: (139.0, 44.0, 28.0)})
    sub = exif.get_ifd(0x8769)
    sub[0x927C] = b"VENDOR\x00serial=123;owner=jdoe"  # MakerNote
    sub[0x9286] = b"ASCII\x00\x00\x00shot by J. Doe at press-1"  # UserComment
    sub[0xA430] = "Jane Doe"  # CameraOwnerName
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description>'
           b"<dc:creator><rdf:Seq><rdf:li>J. Doe</rdf:li></rdf:Seq></dc:creator>"
           b"</rdf:Description></rdf:RDF></x:xmpmeta>")  # fmt: skip
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (90, 140, 200)).save(
        buf, "JPEG", exif=exif, xmp=xmp, icc_profile=b"\x00" * 128 + b"desc J. Doe",
        comment=b"operator J. Doe",
    )  # fmt: skip
    return buf.getvalue()


def test_exif_gps_author_makernote_xmp_icc_and_comments_are_stripped_and_reported():
    data = _rich_jpeg()
    res = scrub_image(data, ImageScrubConfig(), names, KEY, field="image")
    assert res.changed and not has_metadata(res.data) and b"Doe" not in res.data
    assert scan_data(res.data) == scan_data(data)  # no re-encoding for stripping
    assert set(res.stripped) == {"exif", "xmp", "icc", "comment"}
    got = {(f.entity, f.field) for f in res.findings}
    assert got == {
        ("EXIF_AUTHOR", "image.exif.Artist"), ("EXIF_AUTHOR", "image.exif.Copyright"),
        ("EXIF_OWNER", "image.exif.CameraOwnerName"), ("EXIF_MAKERNOTE", "image.exif.MakerNote"),
        ("EXIF_GPS", "image.exif.GPSInfo"), ("XMP_AUTHOR", "image.xmp.dc:creator"),
        ("PERSON", "image.exif.UserComment"), ("PERSON", "image.comment"),
    }  # fmt: skip
    assert all(f.modality == "metadata" and f.operator == "strip" for f in res.findings)
    by = {f.field: f for f in res.findings}
    assert by["image.exif.Artist"].original_hash == keyed_hash(KEY, "J. Doe")
    assert by["image.exif.UserComment"].original_hash == keyed_hash(KEY, "J. Doe")
    assert "Doe" not in json.dumps([f.to_dict() for f in res.findings])


def test_png_text_exif_and_icc_chunks_are_stripped_and_the_pixel_chunks_kept():
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "J. Doe")
    info.add_text("Comment", "inspected by J. Doe")
    info.add_text("Software", "InspectCam 1.4")
    exif = Image.Exif()
    exif[0x013B] = "J. Doe"
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, "PNG", pnginfo=info, exif=exif,
                                                    icc_profile=b"\x00" * 64)  # fmt: skip
    data = buf.getvalue()
    res = scrub_image(data, ImageScrubConfig(), names, KEY)
    assert {(f.entity, f.field) for f in res.findings} == {
        ("PNG_AUTHOR", "image.png.Author"), ("PERSON", "image.png.Comment"),
        ("EXIF_AUTHOR", "image.exif.Artist"),
    }  # fmt: skip
    assert set(res.stripped) == {"text", "exif", "icc"} and not has_metadata(res.data)
    idat = [c for c in re.findall(rb"IDAT.*?(?=....IEND)", data, re.S)]
    assert idat and idat[0] in res.data
    assert (pixels(res.data) == pixels(data)).all()


def test_other_formats_are_rewritten_as_png_with_the_same_pixels():
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[0x013B] = "J. Doe"
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(buf, "TIFF", tiffinfo=ifd)
    res = scrub_image(buf.getvalue(), ImageScrubConfig(ocr=[]), names, KEY)
    assert res.format == "PNG" and res.changed and not has_metadata(res.data)
    assert [f.entity for f in res.findings] == ["EXIF_AUTHOR"]
    assert (pixels(res.data) == pixels(buf.getvalue())).all()


def test_orientation_is_applied_and_dropped():
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:, :10] = 255  # a white stripe on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90° clockwise
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", exif=exif)
    res = scrub_image(buf.getvalue(), ImageScrubConfig(ocr=[]), names, KEY)
    assert (res.width, res.height) == (40, 60) and res.changed and not has_metadata(res.data)
    out = pixels(res.data)
    assert out.shape == (60, 40, 3) and out[:10].min() == 255 and out[10:].max() == 0


# ------------------------------------------------------------------ bad input


def _png_claiming(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _animated_gif() -> bytes:
    buf = io.BytesIO()
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: b"", "empty image"),
    (lambda d: d[: len(d) // 2], "does not decode"),
    (lambda d: d[:200], "does not decode"),
    (lambda d: b"\x00garbage" * 50, "does not decode"),
    (lambda d: _png_claiming(100_000, 100_000), "decompression bomb"),
    (lambda d: _png_claiming(8_000, 8_000), "over max_pixels=50,000,000"),
    (lambda d: _animated_gif(), "only still images"),
])  # fmt: skip
def test_bad_images_raise_input_data_error_for_quarantine(factory, make, message):
    root, _ = factory
    data = make(next(root.glob("press-1/cam/*.jpg")).read_bytes())
    with pytest.raises(InputDataError, match=message):
        scrub_image(data, ImageScrubConfig(), names, KEY)


@pytest.mark.parametrize("size", [(1, 1), (1, 500), (500, 2), (5, 5)])
def test_tiny_and_thin_images_pass_through(size):
    buf = io.BytesIO()
    Image.new("RGB", size, (7, 8, 9)).save(buf, "PNG")
    res = scrub_image(buf.getvalue(), ImageScrubConfig(), names, KEY)
    assert not res.changed and res.findings == [] and (res.width, res.height) == size


def test_strippers_reject_truncated_containers():
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG")
    with pytest.raises(InputDataError, match="truncated"):
        strip_jpeg(buf.getvalue()[:-2])
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "PNG")
    with pytest.raises(InputDataError, match="truncated"):
        strip_png(buf.getvalue()[:-12])

"""Video connector: exact per-frame device times from container pts, frames kept as refs."""

from __future__ import annotations

import json
import math
import random
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from connectors.video import VideoOptions, pts_to_ns
from mmdata.synth import SynthConfig, generate_factory

from .conftest import counts, ingest_one

S = 1_000_000_000
T0 = 1_772_352_000 * S  # 2026-03-01T08:00:00Z
NAME = "cam_%Y%m%dT%H%M%S.%fZ"
TB_MP4 = Fraction(1, 90_000)
TB_MKV = Fraction(1, 1000)  # Matroska stores milliseconds


def write_video(
    path: Path,
    pts: list[int],
    time_base: Fraction,
    *,
    codec: str = "libx264",
    fmt: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Encode 64×48 frames with exactly these pts (real encoder, real muxer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as box:
        for k, v in (metadata or {}).items():
            box.metadata[k] = v
        stream = box.add_stream(codec, rate=30)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        for i, p in enumerate(pts):
            arr = np.full((48, 64, 3), (i * 37) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = p, time_base
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode(None):
            box.mux(packet)
    return path


def expected_ns(start_ns: int, pts: list[int], tb: Fraction) -> list[int]:
    """Device time of each pts: start + pts × time base, rounded half up to 1 ns."""
    return [start_ns + math.floor(p * tb * S + Fraction(1, 2)) for p in pts]


def vfr_pts(n: int, seed: int, steps: tuple[int, ...]) -> list[int]:
    rnd = random.Random(seed)
    out = [0]
    for _ in range(n - 1):
        out.append(out[-1] + rnd.choice(steps))
    return out


def frames(got):
    return got.streams["frames"].to_pydict()


# --- exact times --------------------------------------------------------------------------


def test_constant_rate_mp4_frames_get_exact_times(tmp_path):
    pts = [i * 3000 for i in range(30)]  # 30 fps at 1/90000
    path = write_video(tmp_path / "v" / "cfr.mp4", pts, TB_MP4)
    got = ingest_one(tmp_path, "video", path, start={"ns": T0})
    f = frames(got)
    assert f["ts_ns"] == expected_ns(T0, pts, TB_MP4)
    assert f["pts"] == pts and f["frame_index"] == list(range(30))
    assert {(w, h) for w, h in zip(f["width"], f["height"], strict=True)} == {(64, 48)}
    assert set(f["codec"]) == {"h264"} and set(f["decoder"]) == {"decord"}
    assert f["source_locator"][:2] == ["frame 0", "frame 1"]
    assert counts(got).in_ == counts(got).out == 30
    meta = got.index["frames"]["meta"]
    assert meta["time_base"] == "1/90000" and meta["start_source"] == "config"
    assert not got.index["frames"]["flags"]


def test_variable_frame_rate_mp4_and_mkv(tmp_path):
    pts = vfr_pts(40, 1, (1500, 3000, 4500, 7777))
    mp4 = write_video(tmp_path / "v" / "vfr.mp4", pts, TB_MP4)
    got = ingest_one(tmp_path, "video", mp4, start={"ns": T0})
    assert frames(got)["ts_ns"] == expected_ns(T0, pts, TB_MP4)
    assert frames(got)["pts"] == pts
    ms = vfr_pts(40, 2, (17, 33, 50, 91))
    mkv = write_video(tmp_path / "v" / "vfr.mkv", ms, TB_MKV, fmt="matroska")
    got = ingest_one(tmp_path, "video", mkv, start={"ns": T0})
    assert frames(got)["ts_ns"] == [T0 + m * 1_000_000 for m in ms]
    assert not got.index["frames"]["flags"]


def test_a_stream_starting_at_1_5_s_is_placed_at_1_5_s(tmp_path):
    import decord

    pts = [135_000 + i * 3000 for i in range(25)]  # the first frame is 1.5 s after pts 0
    mp4 = write_video(tmp_path / "v" / "late.mp4", pts, TB_MP4)
    mkv = write_video(tmp_path / "v" / "late.mkv", [1500 + 40 * i for i in range(25)], TB_MKV,
                      fmt="matroska")  # fmt: skip
    # decord alone says the first frame is at 0.0 s: the start offset comes from PyAV
    assert float(decord.VideoReader(str(mp4)).get_frame_timestamp([0])[0, 0]) == 0.0
    got = ingest_one(tmp_path, "video", mp4, start={"ns": T0})
    assert frames(got)["ts_ns"] == expected_ns(T0, pts, TB_MP4)
    assert frames(got)["ts_ns"][0] == T0 + 1_500_000_000
    got = ingest_one(tmp_path, "video", mkv, start={"ns": T0})
    assert frames(got)["ts_ns"][:2] == [T0 + 1_500_000_000, T0 + 1_540_000_000]
    assert not got.index["frames"]["flags"]


def test_an_hour_long_recording_stays_exact_where_decord_float32_times_cannot(tmp_path):
    import decord

    pts = [i * 127 * 90_000 + (i * 7) % 13 for i in range(30)]  # ~2 min apart, odd ticks
    path = write_video(tmp_path / "v" / "long.mp4", pts, TB_MP4)
    t = decord.VideoReader(str(path)).get_frame_timestamp(list(range(30)))[:, 0]
    assert t.dtype == np.float32
    assert np.rint(t.astype(np.float64) * 90_000).astype(np.int64).tolist() != pts
    got = ingest_one(tmp_path, "video", path, start={"ns": T0})
    assert frames(got)["ts_ns"] == expected_ns(T0, pts, TB_MP4)
    assert not got.index["frames"]["flags"]  # within float32 precision: not a disagreement


def test_odd_time_bases_round_half_up_to_the_nanosecond():
    tb = Fraction(1001, 30_000)
    pts = np.array([0, 1, 2, 3, 10**9], dtype=np.int64)
    assert pts_to_ns(pts, tb).tolist() == expected_ns(0, pts.tolist(), tb)
    assert pts_to_ns(np.array([1]), Fraction(1, 3)).tolist() == [333_333_333]
    assert pts_to_ns(np.array([2]), Fraction(1, 3)).tolist() == [666_666_667]


# --- start of the recording -----------------------------------------------------------------


def test_start_from_creation_time_or_file_name(tmp_path):
    pts = [i * 4500 for i in range(20)]
    meta = {"creation_time": "2026-03-01T08:00:05.000000Z"}
    tagged = write_video(tmp_path / "v" / "tagged.mp4", pts, TB_MP4, metadata=meta)
    got = ingest_one(tmp_path, "video", tagged)  # default start: {metadata: true}
    assert frames(got)["ts_ns"] == expected_ns(T0 + 5 * S, pts, TB_MP4)
    assert got.index["frames"]["meta"]["start_source"] == "metadata"

    named = write_video(tmp_path / "n" / "cam_20260301T080007.250Z.mkv", [0, 40, 80], TB_MKV,
                        fmt="matroska")  # fmt: skip
    got = ingest_one(tmp_path, "video", named, start={"filename": NAME})
    assert frames(got)["ts_ns"] == [T0 + 7_250_000_000 + k * 40_000_000 for k in range(3)]

    untagged = write_video(tmp_path / "u" / "untagged.mp4", pts, TB_MP4)
    got = ingest_one(tmp_path, "video", untagged)
    assert counts(got).out == 0
    assert "no creation_time tag" in got.reasons()[0]


def test_start_option_needs_exactly_one_way():
    assert VideoOptions().start.metadata
    for bad in ({}, {"metadata": True, "ns": 5}, {"filename": "no-fields"}, {"ns": 1, "tz": "X/Y"}):
        with pytest.raises(ValueError):  # noqa: PT011 - pydantic's ValidationError
            VideoOptions(start=bad)


def test_synthetic_factory_mp4_matches_ground_truth(tmp_path):
    out = tmp_path / "factory"
    generate_factory(SynthConfig(assets=1, minutes=0.1, workers=1, camera="mp4"), out)
    truth = json.loads((out / "ground_truth.json").read_text())
    (entry,) = truth["devices"]["cam-press-1"]["files"]
    got = ingest_one(tmp_path, "video", out / entry["path"],
                     start={"filename": "cam-press-1_%Y%m%dT%H%M%S.%fZ"})  # fmt: skip
    assert frames(got)["ts_ns"] == entry["frame_ts_ns"]
    assert counts(got).out == entry["samples"]


# --- decoders ------------------------------------------------------------------------------


def test_pyav_alone_when_configured_or_decord_is_missing(tmp_path, monkeypatch):
    pts = vfr_pts(20, 3, (3000, 6000))
    path = write_video(tmp_path / "v" / "a.mp4", pts, TB_MP4)
    forced = ingest_one(tmp_path, "video", path, start={"ns": T0}, decoder="pyav")
    assert set(frames(forced)["decoder"]) == {"pyav"}
    assert frames(forced)["ts_ns"] == expected_ns(T0, pts, TB_MP4)
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` now fails
    missing = ingest_one(tmp_path, "video", path, start={"ns": T0})
    assert set(frames(missing)["decoder"]) == {"pyav"}
    assert missing.index["frames"]["meta"]["decoder"] == "pyav"
    assert frames(missing)["ts_ns"] == frames(forced)["ts_ns"]


@pytest.mark.skipif("libsvtav1" not in av.codecs_available, reason="no AV1 encoder")
def test_a_codec_decord_cannot_open_falls_back_to_pyav(tmp_path):
    pts = [i * 400 for i in range(12)]
    path = write_video(tmp_path / "v" / "av1.mp4", pts, Fraction(1, 10_000), codec="libsvtav1")
    got = ingest_one(tmp_path, "video", path, start={"ns": T0})
    f = frames(got)
    assert set(f["decoder"]) == {"pyav"} and set(f["codec"]) == {"av1"}
    assert f["ts_ns"] == expected_ns(T0, pts, Fraction(1, 10_000))


# --- bad input ------------------------------------------------------------------------------


def test_truncated_and_fake_videos_are_quarantined_while_good_ones_ingest(tmp_path):
    d = tmp_path / "v"
    pts = [i * 3000 for i in range(30)]
    good = write_video(d / "a_good.mp4", pts, TB_MP4).read_bytes()
    (d / "b_cut.mp4").write_bytes(good[: len(good) * 2 // 3])  # the index (moov) is lost
    faststart = d / "c_faststart.mp4"
    moov_first = {"movflags": "+faststart"}  # the index is written before the frame data
    with (
        av.open(str(d / "a_good.mp4")) as src,
        av.open(str(faststart), "w", format="mp4", options=moov_first) as dst,
    ):
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    data = faststart.read_bytes()
    faststart.write_bytes(data[: len(data) * 2 // 3])  # index intact, frame data cut
    (d / "d_text.mp4").write_bytes(b"this is a shopping list, not a video\n" * 40)
    write_video(d / "e_good.mkv", [2000, 2040, 2080, 2120], TB_MKV, fmt="matroska")  # after a

    got = ingest_one(tmp_path, "video", d, start={"ns": T0})
    reasons = {Path(r.source_ref).name: r.message for r in got.quarantine}
    assert set(reasons) == {"b_cut.mp4", "c_faststart.mp4", "d_text.mp4"}
    assert "no video frames could be read" in reasons["b_cut.mp4"]
    assert "index lists 30 frames but only" in reasons["c_faststart.mp4"]
    assert "not a readable video container" in reasons["d_text.mp4"]
    assert got.streams["frames"].num_rows == 30 + 4
    uris = {Path(u).name for u in got.streams["frames"].column("uri").to_pylist()}
    assert uris == {"a_good.mp4", "e_good.mkv"}


def test_an_audio_only_file_is_not_a_video(tmp_path):
    path = tmp_path / "voice.mp4"
    with av.open(str(path), "w") as box:
        stream = box.add_stream("aac", rate=16_000)
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")  # fmt: skip
        frame.sample_rate, frame.pts = 16_000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            box.mux(packet)
    got = ingest_one(tmp_path, "video", path, start={"ns": T0})
    assert "no video stream" in got.reasons()[0]

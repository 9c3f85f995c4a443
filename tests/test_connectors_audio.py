"""The audio connector: real WAV/FLAC/OGG/Opus/MP3 (soundfile) and M4A/MP4/MKV/MOV (PyAV)
files, cut into chunk rows with exact device timestamps; bad files quarantined."""

from __future__ import annotations

import itertools
import json
import struct
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
from pydantic import ValidationError

from connectors.audio import AudioOptions, bext_start_ns, sample_time_ns
from connectors.timeparse import parse_iso_ns, zone
from tests.conftest import ingest_one

NS = 1_000_000_000
T0 = parse_iso_ns("2026-03-01T08:00:00Z")


# --- real media, made with real encoders ---------------------------------------------


def sines(freqs: list[float], rate: int, frames: int, amp: float = 0.4) -> np.ndarray:
    """(frames, channels) float32: channel k is a sine at freqs[k]."""
    t = np.arange(frames) / rate
    return np.stack([amp * np.sin(2 * np.pi * f * t) for f in freqs], axis=1).astype(np.float32)


def write_av(path: Path, x: np.ndarray, rate: int, *, fmt: str, video: bool = False,
             audio_pts: int = 0, creation_time: str | None = None) -> Path:  # fmt: skip
    """Encode (frames, channels) float32 as AAC with PyAV (plus a tiny H.264 track)."""
    layout = {1: "mono", 2: "stereo"}[x.shape[1]]
    c = av.open(str(path), "w", format=fmt)
    if creation_time:
        c.metadata["creation_time"] = creation_time
    vs = None
    if video:
        vs = c.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
    s = c.add_stream("aac", rate=rate)
    s.layout = layout
    for i in range(0, x.shape[0], 1024):
        block = np.ascontiguousarray(x[i : i + 1024].T)
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, audio_pts + i, Fraction(1, rate)
        for p in s.encode(frame):
            c.mux(p)
    for p in s.encode(None):
        c.mux(p)
    if vs is not None:
        for k in range(x.shape[0] * 10 // rate):
            vf = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            vf.pts = k
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
    c.close()
    return path


def bext_body(date: str, time: str, time_ref: int) -> bytes:
    """A 602-byte bext chunk body (EBU Tech 3285 v1)."""
    return struct.pack(
        "<256s32s32s10s8sQH64s190s", b"line 2 press mic", b"mmdata-tests", b"ref-1",
        date.encode(), time.encode(), time_ref, 1, b"", b"",
    )  # fmt: skip


def write_bwf(path: Path, x: np.ndarray, rate: int, bext: bytes) -> Path:
    """A soundfile-written WAV with a real bext chunk appended and the RIFF size fixed."""
    sf.write(path, x, rate, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data += b"bext" + struct.pack("<I", len(bext)) + bext
    data[4:8] = struct.pack("<I", len(data) - 8)
    path.write_bytes(bytes(data))
    return path


def tally(res) -> tuple[int, int, int]:
    """(in, out, quarantined) of an ingest."""
    c: Any = res.counts
    return c.in_, c.out, c.quarantined


def rows(res, suffix: str = "audio") -> list[dict]:
    return res.streams[suffix].to_pylist()


def channel_freqs(table, rate: int) -> list[float]:
    """Dominant frequency per channel over all chunks (interleaved samples de-interleaved)."""
    ch = table.column("channels")[0].as_py()
    x = np.concatenate([np.asarray(s, np.float32) for s in table.column("samples").to_pylist()])
    x = x.reshape(-1, ch)
    spec = np.abs(np.fft.rfft(x * np.hanning(x.shape[0])[:, None], axis=0))
    return (np.argmax(spec, axis=0) * rate / x.shape[0]).tolist()


# --- timestamps, layout, values ------------------------------------------------------


def test_pcm16_wav_rows_are_chunks_with_exact_times_and_lossless_samples(tmp_path):
    rate = 16000
    pcm = np.random.default_rng(1).integers(-32768, 32767, rate * 5 // 2, dtype=np.int16)
    sf.write(tmp_path / "m.wav", pcm, rate, subtype="PCM_16")
    res = ingest_one(tmp_path, "audio", tmp_path / "m.wav", start={"iso": "2026-03-01T08:00:00Z"})
    got = rows(res)
    assert [r["ts_ns"] for r in got] == [T0, T0 + NS, T0 + 2 * NS]
    assert [r["source_locator"] for r in got] == [
        "samples 0-15999", "samples 16000-31999", "samples 32000-39999"]  # fmt: skip
    assert [r["n_frames"] for r in got] == [16000, 16000, 8000]
    assert {(r["sample_rate"], r["channels"]) for r in got} == {(16000, 1)}
    back = np.concatenate([np.asarray(r["samples"], np.float32) for r in got]) * 32768
    assert np.array_equal(back.astype(np.int16), pcm)
    types = {f.name: f.type for f in res.streams["audio"].schema}
    assert (types["ts_ns"], types["sample_rate"], types["channels"], types["n_frames"]) == (
        pa.int64(), pa.int32(), pa.int16(), pa.int32())  # fmt: skip
    assert pa.types.is_list(types["samples"]) and types["samples"].value_type == pa.float32()
    meta = res.index["audio"]["meta"]
    assert meta["sample_rate_hz"] == 16000 and meta["channels"] == 1
    assert (meta["decoder"], meta["container"], meta["subtype"]) == ("soundfile", "WAV", "PCM_16")
    assert tally(res) == (3, 3, 0)


@pytest.mark.parametrize(("rate", "chunk_ms"), [(44100, 10), (22050, 1), (8000, 250)])
def test_chunk_times_are_integer_exact_at_any_rate(tmp_path, rate, chunk_ms):
    sf.write(tmp_path / "r.wav", np.zeros(rate // 2, np.float32), rate, subtype="PCM_16")
    start = "2026-03-01T08:00:00.123456789Z"
    res = ingest_one(tmp_path, "audio", tmp_path / "r.wav", start={"iso": start},
                     chunk_ms=chunk_ms)  # fmt: skip
    chunk = rate * chunk_ms // 1000
    ts = [r["ts_ns"] for r in rows(res)]
    t0 = parse_iso_ns(start)
    assert ts == [t0 + (k * chunk * NS) // rate for k in range(len(ts))]
    assert len(ts) == -(-(rate // 2) // chunk)


def test_sample_time_does_not_overflow_on_a_day_at_192_khz():
    day = 192_000 * 86_400
    assert int(sample_time_ns(T0, np.array([day]), 192_000)[0]) == T0 + 86_400 * NS


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_multichannel_float_wav_keeps_every_channel_in_order(tmp_path, channels):
    rate, freqs = 16000, [250.0, 1000.0, 2500.0, 5000.0][:channels]
    x = sines(freqs, rate, rate * 2)
    sf.write(tmp_path / "c.wav", x, rate, subtype="FLOAT")
    res = ingest_one(tmp_path, "audio", tmp_path / "c.wav", start={"ns": T0})
    table = res.streams["audio"]
    assert set(table.column("channels").to_pylist()) == {channels}
    assert channel_freqs(table, rate) == pytest.approx(freqs, abs=1.0)
    first = np.asarray(table.column("samples")[0].as_py(), np.float32)
    assert np.array_equal(first.reshape(-1, channels), x[:rate])  # interleaved, exact


def _sf_cases() -> list:
    cases = [
        ("f.flac", "FLAC", "PCM_16", 16000),
        ("v.ogg", "OGG", "VORBIS", 16000),
        ("o.opus", "OGG", "OPUS", 48000),
        ("m.mp3", "MP3", "MPEG_LAYER_III", 16000),
    ]
    out = []
    for name, fmt, sub, rate in cases:
        ok = fmt in sf.available_formats() and sub in sf.available_subtypes(fmt)
        out.append(pytest.param(name, fmt, sub, rate, id=name, marks=pytest.mark.skipif(
            not ok, reason=f"libsndfile here cannot write {fmt}/{sub}")))  # fmt: skip
    return out


@pytest.mark.parametrize(("name", "fmt", "subtype", "rate"), _sf_cases())
def test_soundfile_formats_decode_with_channels_kept(tmp_path, name, fmt, subtype, rate):
    freqs = [440.0, 1500.0]
    sf.write(tmp_path / name, sines(freqs, rate, rate * 3), rate, format=fmt, subtype=subtype)
    res = ingest_one(tmp_path, "audio", tmp_path / name, start={"ns": T0})
    table = res.streams["audio"]
    assert table.num_rows == 3 and res.quarantine == []
    assert table.column("ts_ns").to_pylist() == [T0, T0 + NS, T0 + 2 * NS]
    assert set(table.column("sample_rate").to_pylist()) == {rate}
    assert channel_freqs(table, rate) == pytest.approx(freqs, abs=2.0)
    assert res.index["audio"]["meta"]["subtype"] == subtype


@pytest.mark.parametrize(("name", "fmt", "video"), [
    ("a.m4a", "mp4", False), ("v.mp4", "mp4", True), ("v.mkv", "matroska", True),
    ("v.mov", "mov", True)])  # fmt: skip
def test_aac_and_video_audio_tracks_decode_through_pyav(tmp_path, name, fmt, video):
    rate, freqs = 16000, [440.0, 1500.0]
    write_av(tmp_path / name, sines(freqs, rate, rate * 3), rate, fmt=fmt, video=video)
    res = ingest_one(tmp_path, "audio", tmp_path / name, start={"ns": T0})
    assert list(res.streams) == ["audio"] and res.quarantine == []
    table = res.streams["audio"]
    assert table.num_rows == 4  # 3 s plus the AAC encoder's padding to a whole frame
    assert set(table.column("channels").to_pylist()) == {2}
    assert channel_freqs(table, rate) == pytest.approx(freqs, abs=2.0)
    ts = table.column("ts_ns").to_pylist()
    assert [b - a for a, b in itertools.pairwise(ts)] == [NS] * 3
    meta = res.index["audio"]["meta"]
    assert (meta["decoder"], meta["codec"], meta["channels"]) == ("pyav", "aac", 2)


@pytest.mark.parametrize(("name", "fmt"), [("late.mp4", "mp4"), ("late.mkv", "matroska")])
def test_audio_starting_after_a_videos_time_zero_is_placed_by_its_pts(tmp_path, name, fmt):
    rate = 16000
    x = np.zeros((rate * 2, 1), np.float32)
    x[4000:4040, 0] = 0.8 * np.sin(2 * np.pi * 2000 * np.arange(40) / rate)  # a click
    write_av(tmp_path / name, x, rate, fmt=fmt, video=True, audio_pts=rate // 2)
    res = ingest_one(tmp_path, "audio", tmp_path / name, start={"ns": T0}, chunk_ms=100)
    onset = None
    for r in rows(res):
        hits = np.flatnonzero(np.abs(np.asarray(r["samples"])) > 0.2)
        if hits.size:
            onset = r["ts_ns"] + int(hits[0]) * NS // rate
            break
    # audio pts 0.5 s + click at 0.25 s into the track = 0.75 s after the file's time zero
    assert onset is not None and abs(onset - (T0 + 750_000_000)) < 2_000_000


# --- start times -------------------------------------------------------------------


def test_synthetic_factory_microphone_starts_at_its_ground_truth_device_time(tmp_path):
    from mmdata.synth import SynthConfig, generate_factory

    out = tmp_path / "factory"
    generate_factory(SynthConfig(assets=1, minutes=0.2, workers=1), out)
    truth = json.loads((out / "ground_truth.json").read_text())["devices"]["mic-press-1"]
    res = ingest_one(tmp_path, "audio", out / "press-1" / "mic", device="mic-press-1",
                     start={"filename": "mic-press-1_%Y%m%dT%H%M%S.%fZ"})  # fmt: skip
    table = res.streams["audio"]
    first = truth["files"][0]
    assert table.column("ts_ns")[0].as_py() == first["first_ts_ns"] == truth["device_start_ns"]
    rate = truth["nominal_rate_hz"]
    assert sum(table.column("n_frames").to_pylist()) == truth["samples"]
    assert table.num_rows == sum(-(-f["samples"] // rate) for f in truth["files"])
    assert res.quarantine == []


def test_bwf_start_is_midnight_plus_time_reference_in_the_local_zone(tmp_path):
    rate = 48000
    time_ref = (8 * 3600 + 59 * 60 + 59) * rate + 12_000  # 08:59:59.25 local
    path = write_bwf(tmp_path / "take.wav", sines([1000.0], rate, rate), rate,
                     bext_body("2026-03-01", "08:59:59", time_ref))  # fmt: skip
    res = ingest_one(tmp_path, "audio", path, start={"bext": True, "tz": "Asia/Tokyo"})
    expected = parse_iso_ns("2026-02-28T23:59:59.25Z")
    assert rows(res)[0]["ts_ns"] == expected
    assert rows(res)[0]["n_frames"] == rate  # the appended chunk does not disturb the samples


def test_bwf_without_time_reference_uses_origination_time_and_crosses_midnight():
    rate, tz = 48000, zone("UTC")
    assert bext_start_ns(bext_body("2026-03-01", "10:11:12", 0), rate, tz) == parse_iso_ns(
        "2026-03-01T10:11:12Z")  # fmt: skip
    # Started 23:59:00 on Feb 28, file dated Mar 1 00:01: the day before midnight.
    late = bext_body("2026-03-01", "00:01:00", (23 * 3600 + 59 * 60) * rate)
    assert bext_start_ns(late, rate, tz) == parse_iso_ns("2026-02-28T23:59:00Z")


def test_container_creation_time_is_the_start_with_metadata(tmp_path):
    rate = 16000
    path = write_av(tmp_path / "clip.mp4", sines([440.0], rate, rate * 2), rate, fmt="mp4",
                    video=True, creation_time="2026-03-01T08:00:00Z")  # fmt: skip
    res = ingest_one(tmp_path, "audio", path, start={"metadata": True})
    assert rows(res)[0]["ts_ns"] == T0


def test_missing_or_unparseable_start_times_quarantine_the_file(tmp_path):
    rate = 16000
    src = tmp_path / "src"
    src.mkdir()
    sf.write(src / "mic_20260301T080000.000Z.wav", np.zeros(rate, np.float32), rate)
    sf.write(src / "mic_badname.wav", np.zeros(rate, np.float32), rate)
    sf.write(src / "mic_20261301T080000.000Z.wav", np.zeros(rate, np.float32), rate)
    res = ingest_one(tmp_path, "audio", src, start={"filename": "mic_%Y%m%dT%H%M%S.%fZ"})
    assert rows(res)[0]["ts_ns"] == T0 and res.streams["audio"].num_rows == 1
    reasons = sorted(res.reasons())
    assert "impossible time" in reasons[0] and "does not match the time pattern" in reasons[1]
    plain = ingest_one(tmp_path, "audio", src / "mic_20260301T080000.000Z.wav",
                       start={"bext": True})  # fmt: skip
    assert plain.reasons() == ["no bext chunk: not a Broadcast WAV file\n  fix: use start: "
                               "{filename: ...} or {iso: ...} instead"]  # fmt: skip
    clip = write_av(tmp_path / "bare.m4a", sines([440.0], rate, rate), rate, fmt="mp4")
    bare = ingest_one(tmp_path, "audio", clip, start={"metadata": True})
    assert "no creation_time" in bare.reasons()[0]


def test_options_need_exactly_one_valid_start():
    with pytest.raises(ValidationError, match="start"):
        AudioOptions.model_validate({})
    with pytest.raises(ValidationError, match="exactly one of"):
        AudioOptions.model_validate({"start": {"ns": 0, "bext": True}})
    with pytest.raises(ValidationError, match="time zone"):
        AudioOptions.model_validate({"start": {"bext": True, "tz": "Mars/Olympus"}})
    with pytest.raises(ValidationError, match="date and time fields"):
        AudioOptions.model_validate({"start": {"filename": "mic_%Y.wav"}})
    with pytest.raises(ValidationError, match="on_truncated"):
        AudioOptions.model_validate({"start": {"ns": 0}, "on_truncated": "ignore"})
    assert AudioOptions.model_validate({"start": {"ns": 0}}).chunk_ms == 1000


# --- bad input ---------------------------------------------------------------------


def test_bad_files_are_quarantined_with_reasons_while_good_ones_ingest(tmp_path):
    rate = 16000
    src = tmp_path / "mic"
    src.mkdir()
    sf.write(src / "good.wav", sines([440.0], rate, rate * 2), rate, subtype="PCM_16")
    wav = (src / "good.wav").read_bytes()
    (src / "header.wav").write_bytes(wav[:20])
    (src / "cut.wav").write_bytes(wav[: 44 + rate])  # the data chunk still declares 2 s
    patched = bytearray(wav)
    patched[40:44] = struct.pack("<I", 10 * rate * 2)  # data size field: 10 s
    (src / "declares10s.wav").write_bytes(bytes(patched))
    (src / "notes.wav").write_text("operator note: press 3 noisy\n" * 20)
    (src / "notes.m4a").write_text("not an mp4 either\n" * 20)
    sf.write(src / "empty.wav", np.zeros((0, 1), np.float32), rate, subtype="PCM_16")
    flac = src / "cut.flac"
    sf.write(flac, sines([440.0], rate, rate * 3), rate)
    flac.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    res = ingest_one(tmp_path, "audio", src, start={"ns": T0})
    assert res.streams["audio"].num_rows == 2  # good.wav only
    by_file = {Path(q.source_ref).name: q.message for q in res.quarantine}
    assert set(by_file) == {"header.wav", "cut.wav", "declares10s.wav", "notes.wav",
                            "notes.m4a", "empty.wav", "cut.flac"}  # fmt: skip
    assert by_file["header.wav"].startswith("truncated WAV header: the file is 20 bytes")
    assert by_file["cut.wav"].startswith("truncated WAV: the data chunk declares 64000 bytes")
    assert by_file["declares10s.wav"].startswith("truncated WAV: the data chunk declares 320000")
    assert by_file["notes.wav"].startswith("not a readable audio file")
    assert by_file["notes.m4a"].startswith("not a readable audio file")
    assert by_file["empty.wav"].startswith("zero-length audio")
    assert by_file["cut.flac"].startswith("wrong declared length: declared 48000 frames")
    assert tally(res) == (9, 2, 7)


def test_salvage_keeps_what_decodes_flags_truncated_and_quarantines_the_rest(tmp_path):
    rate = 16000
    pcm = np.random.default_rng(2).integers(-30000, 30000, rate * 4, dtype=np.int16)
    sf.write(tmp_path / "full.wav", pcm, rate, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes((tmp_path / "full.wav").read_bytes()[: 44 + 2 * (rate + 500)])
    res = ingest_one(tmp_path, "audio", cut, start={"ns": T0}, on_truncated="salvage")
    got = rows(res)
    assert [r["n_frames"] for r in got] == [rate, 500]
    back = np.concatenate([np.asarray(r["samples"]) for r in got]) * 32768
    assert np.array_equal(back.astype(np.int16), pcm[: rate + 500])
    assert res.index["audio"]["flags"] == {"truncated": 1}
    (q,) = res.quarantine
    assert (q.locator, q.error_class) == (f"samples {rate + 500}-{4 * rate - 1}", "TruncatedAudio")
    assert q.message.startswith("truncated: the WAV data chunk declares 128000 bytes but the "
                                "file holds 33000") and q.message.endswith("(2 units)")  # fmt: skip
    assert tally(res) == (4, 2, 2)


def test_salvage_of_a_flac_cut_mid_stream_keeps_the_frames_before_the_error(tmp_path):
    rate = 16000
    flac = tmp_path / "cut.flac"
    sf.write(flac, sines([440.0], rate, rate * 4), rate)
    flac.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    res = ingest_one(tmp_path, "audio", flac, start={"ns": T0}, on_truncated="salvage")
    kept = sum(r["n_frames"] for r in rows(res))
    assert rate <= kept < 2 * rate + rate // 2 and res.index["audio"]["flags"] == {"truncated": 1}
    assert "declared 64000 frames but only" in res.quarantine[0].message


def test_a_video_without_sound_and_a_missing_track_are_quarantined(tmp_path):
    silent = tmp_path / "silent.mp4"
    c = av.open(str(silent), "w")
    vs = c.add_stream("libx264", rate=10)
    vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
    for k in range(5):
        vf = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        vf.pts = k
        for p in vs.encode(vf):
            c.mux(p)
    for p in vs.encode(None):
        c.mux(p)
    c.close()
    res = ingest_one(tmp_path, "audio", silent, start={"ns": T0})
    assert res.reasons() == ["no audio track 0: the file has 0 (a video without sound?)"]
    clip = write_av(tmp_path / "one.m4a", sines([440.0], 16000, 16000), 16000, fmt="mp4")
    res = ingest_one(tmp_path, "audio", clip, start={"ns": T0}, track=1)
    assert res.reasons() == ["no audio track 1: the file has 1"]


def test_remote_files_are_streamed_through_fsspec(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"/audio-test-{tmp_path.name}"
    sf.write(tmp_path / "m.flac", sines([440.0, 880.0], 16000, 32000), 16000)
    fs.pipe(f"{root}/mic_20260301T080000.000Z.flac", (tmp_path / "m.flac").read_bytes())
    try:
        res = ingest_one(tmp_path, "audio", f"memory://{root}/",
                         start={"filename": "mic_%Y%m%dT%H%M%S.%fZ"})  # fmt: skip
    finally:
        fs.rm(root, recursive=True)
    table = res.streams["audio"]
    assert table.column("ts_ns").to_pylist() == [T0, T0 + NS]
    assert table.column("source_uri")[0].as_py().startswith("memory://")
    assert channel_freqs(table, 16000) == pytest.approx([440.0, 880.0], abs=1.0)


# --- memory ------------------------------------------------------------------------

MEASURE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from connectors.audio import AudioConnector, AudioOptions
    from connectors.base import SourceContext, SourceItem
    from mmdata.streams import PartSink

    def read(path, parts):
        opts = AudioOptions.model_validate({"start": {"ns": 0}})
        item = SourceItem(str(path), path.stat().st_size)
        sink = PartSink(item, Path(parts), {}, 1 << 40)
        AudioConnector(SourceContext("a", "mic", 0, str(path), opts)).read(item, sink)
        return sink.commit()

    big, small, parts = (Path(a) for a in sys.argv[1:4])
    read(small, parts / "warm")  # imports and buffers of the same shape (20 s)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = read(big, parts / "big")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024, result.units_out)
    """
)


def test_a_long_file_is_read_in_bounded_memory(tmp_path):
    rate, channels, seconds = 16000, 4, 600
    big = tmp_path / "ten_minutes.wav"
    second = sines([200.0, 400.0, 800.0, 1600.0], rate, rate)
    with sf.SoundFile(big, "w", rate, channels, subtype="PCM_16") as f:
        for k in range(seconds):
            f.write(second * (0.5 + 0.5 * (k % 2)))
    sf.write(tmp_path / "small.wav", np.tile(second, (20, 1)), rate, subtype="PCM_16")
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(big), str(tmp_path / "small.wav"), str(tmp_path)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    grew, rows_out = (int(v) for v in out.stdout.split())
    decoded = seconds * rate * channels * 4  # float32 bytes if the file were held whole
    assert rows_out == seconds
    print(f"peak RSS growth {grew / 1e6:.1f} MB; decoded {decoded / 1e6:.0f} MB")
    assert grew < decoded // 10, f"peak RSS grew {grew / 1e6:.0f} MB for {decoded / 1e6:.0f} MB"

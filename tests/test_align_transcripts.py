"""Sidecar transcripts travel with the records: real WAVs with a JSON and a WebVTT sidecar go
through the real ingest, sync and align; each record's ``transcript`` holds the words of its
audio, timed from its first sample through the microphone's clock model; a malformed sidecar
is quarantined while its audio still aligns; and ``scrub`` mutes the spoken name."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from mmdata.align import run_align
from mmdata.config import PipelineConfig
from mmdata.ingest import run_ingest
from mmdata.quarantine import read_quarantine
from mmdata.rundir import RunDir
from mmdata.scrub.stage import run_scrub
from mmdata.sync import run_sync

S = 1_000_000_000
MS = 1_000_000
T = 1_772_352_000 * S  # 2026-03-01T08:00:00Z, device time of the first microphone file
RATE = 16_000
OFFSET_MS = 500  # the microphone's clock: reference = device + 500 ms
KEY = "a-test-key-that-is-long-enough-0123456789"

# Microphone files: (device start in s from T, sidecar file name suffix, sidecar text).
# File 1 runs [0, 6) s, file 2 [6, 12) s, file 3 [12.5, 18.5) s after a 0.5 s pause, file 4
# [18.5, 24.5) s with a broken sidecar. Word times are seconds in their own file.
JSON_1 = {"language": "en", "words": [
    {"word": "please", "start_ns": 200 * MS, "end_ns": 600 * MS},
    {"word": "call", "start_ns": 1000 * MS, "end_ns": 1400 * MS},
    {"word": "John", "start_ns": 1400 * MS, "end_ns": 1900 * MS},
    {"word": "Smith", "start_ns": 1900 * MS, "end_ns": 2400 * MS},
    {"word": "now", "start_ns": 2600 * MS, "end_ns": 3000 * MS},
    {"word": "done", "start_ns": 5700 * MS, "end_ns": 5950 * MS},
]}  # fmt: skip
VTT_2 = "WEBVTT\n\n00:00.500 --> 00:02.000\nhello <00:00.900>Mary <00:01.300>Jones\n"
JSON_3 = {"segments": [{"start": 0.2, "end": 0.6, "text": "badge"}]}  # Whisper style
FILES = [
    (0.0, ".transcript.json", json.dumps(JSON_1)),
    (6.0, ".vtt", VTT_2),
    (12.5, ".transcript.json", json.dumps(JSON_3)),
    (18.5, ".transcript.json", '{"words": [{"word": "oops", "start_ns": 5'),  # cut short
]


def stamp(t_s: float) -> str:
    sec, frac = divmod(round(t_s * 1000), 1000)
    return f"mic_20260301T0800{sec:02d}.{frac * 1000:06d}Z"


def tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def pipeline(root: Path) -> PipelineConfig:
    mic, vib = root / "mic", root / "vib"
    mic.mkdir(parents=True)
    vib.mkdir()
    for k, (start, suffix, text) in enumerate(FILES):
        sf.write(mic / f"{stamp(start)}.wav", tone(6.0, 220.0 * (k + 1)), RATE, subtype="PCM_16")
        (mic / f"{stamp(start)}{suffix}").write_text(text, encoding="utf-8")
    lines = ["ts_ns,ax"] + [f"{T + k * S // 10},{np.sin(k / 3):.4f}" for k in range(260)]
    (vib / "acc.csv").write_text("\n".join(lines) + "\n")
    return PipelineConfig.model_validate({
        "run_dir": str(root / "run"),
        "assets": {"press": {"sources": [
            {"connector": "sensor", "path": str(vib), "device": "acc", "layout": "wide",
             "time": {"column": "ts_ns", "unit": "ns"}},
            {"connector": "audio", "path": str(mic), "device": "mic",
             "start": {"filename": "mic_%Y%m%dT%H%M%S.%fZ"}},
        ]}},
        "sync": {"reference": "acc", "evidence": ["config"],
                 "constants": {"mic": {"offset_ms": OFFSET_MS}}},
        "align": {"window": {"mode": "tumbling", "length_ms": 2000}, "workers": 1},
    })  # fmt: skip


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    root = tmp_path_factory.mktemp("transcripts")
    cfg = pipeline(root)
    with RunDir.open(cfg.run_dir) as run:
        run_ingest(run, cfg)
        run_sync(run, cfg)
        outcome = run_align(run, cfg)
    return cfg, root / "run", outcome


def rows(path: Path) -> dict[int, dict]:
    """Records by window start, in seconds from T."""
    out = {}
    for f in sorted(path.glob("asset_id=*/date=*/*.parquet")):
        for r in pq.read_table(f).to_pylist():
            out[round((r["window_start_ns"] - T) / S)] = r
    return out


def words(rec: dict) -> list[tuple[str, float, float]]:
    return [(w["word"], w["t0_ns"] / S, w["t1_ns"] / S) for w in rec["transcript"]]


def wav(rec: dict) -> np.ndarray:
    x, rate = sf.read(io.BytesIO(rec["audio"]["bytes"]), dtype="int16")
    assert rate == RATE
    return x


def test_words_are_timed_from_the_records_first_audio_sample_through_the_mic_clock(aligned):
    _, run, _ = aligned
    recs = rows(run / "records")
    # Window [0, 2) s: the microphone starts at 0.5 s reference time (its 500 ms offset), so
    # the file's 0.2 s is 0.7 s reference, 0.2 s after the record's first sample; "John"
    # (1.9-2.4 s reference) straddles the end of the window and is clipped to its audio.
    assert recs[0]["audio_info"]["first_ts_ns"] == T + OFFSET_MS * MS
    assert words(recs[0]) == [("please", 0.2, 0.6), ("call", 1.0, 1.4), ("John", 1.4, 1.5)]
    assert words(recs[2]) == [("John", 0.0, 0.4), ("Smith", 0.4, 0.9), ("now", 1.1, 1.5)]
    assert words(recs[4]) == []  # audio, no speech
    # Window [6, 8): the end of file 1 (JSON) and the start of file 2 (WebVTT, inline word
    # times) in one WAV; Jones runs past the window and is clipped.
    assert words(recs[6]) == [("done", 0.2, 0.45), ("hello", 1.0, 1.4), ("Mary", 1.4, 1.8),
                              ("Jones", 1.8, 2.0)]  # fmt: skip
    assert words(recs[8]) == [("Jones", 0.0, 0.5)]
    assert all(w["t1_ns"] <= r["audio_info"]["n_frames"] * S // RATE and w["t0_ns"] >= 0
               for r in recs.values() if r["audio_info"] for w in r["transcript"])  # fmt: skip


def test_after_a_pause_between_files_words_land_on_their_own_samples(aligned):
    _, run, _ = aligned
    rec = rows(run / "records")[12]
    # Window [12, 14): 0.5 s of file 2 (12-12.5 s reference), a 0.5 s pause, then file 3 from
    # 13 s. "badge" is at 0.2 s of file 3: 0.7 s into the record's WAV, where file 3's
    # 660 Hz tone is (1.2 s after the first sample in reference time, but the WAV has no
    # pause in it).
    assert rec["flags"]["gap"] and rec["audio_info"]["n_frames"] == int(1.5 * RATE)
    assert words(rec) == [("badge", 0.7, 1.1)]
    x = wav(rec).astype(float) / 32768
    seg = x[int(0.7 * RATE) : int(1.1 * RATE)]
    spectrum = np.abs(np.fft.rfft(seg))
    assert np.argmax(spectrum) * RATE / seg.size == pytest.approx(660.0, abs=5)


def test_a_broken_sidecar_is_quarantined_and_its_audio_aligns_without_words(aligned):
    _, run, outcome = aligned
    recs = rows(run / "records")
    late = [r for k, r in recs.items() if k >= 20]
    assert late and all(r["audio"] and r["transcript"] == [] for r in late)
    q = [row for row in read_quarantine(run / "quarantine" / "records.parquet")
         if row.error_class == "InputDataError"]  # fmt: skip
    assert [Path(row.source_ref).name for row in q] == [f"{stamp(18.5)}.transcript.json"]
    assert "not valid JSON" in q[0].message and "without a transcript" in q[0].message
    c = outcome.counts
    assert c.in_ == c.out + c.quarantined and c.out == len(recs)
    index = json.loads((run / "records" / "_index.json").read_text())["assets"]["press"]
    assert index["transcribed"] == sum(bool(r["transcript"]) for r in recs.values()) == 5
    assert index["bad_transcripts"] == [q[0].source_ref]


def test_editing_a_sidecar_re_aligns(aligned, tmp_path):
    cfg, _, _ = aligned
    root = tmp_path / "again"
    cfg2 = pipeline(root)
    with RunDir.open(cfg2.run_dir) as run:
        run_ingest(run, cfg2)
        run_sync(run, cfg2)
        run_align(run, cfg2)
        assert run_align(run, cfg2).skipped
        vtt = root / "mic" / f"{stamp(6.0)}.vtt"
        vtt.write_text(VTT_2.replace("hello", "hi"), encoding="utf-8")
        assert not run_align(run, cfg2).skipped
    assert words(rows(root / "run" / "records")[6])[1][0] == "hi"
    _ = cfg


def test_scrub_mutes_the_spoken_name_and_replaces_it_in_the_transcript(aligned, monkeypatch):
    cfg, run_dir, _ = aligned
    monkeypatch.setenv("MMDATA_PII_KEY", KEY)
    with RunDir.open(cfg.run_dir) as run:
        run_scrub(run, cfg)
    before, after = rows(run_dir / "records"), rows(run_dir / "scrubbed")
    pad = cfg.scrub.audio.padding_ms
    names = {0: (1400, 1500, ["please", "call", "<PERSON"]),  # "John" (clipped), in ms
             2: (0, 900, ["<PERSON", "now"])}  # "John Smith": one token  # fmt: skip
    for start, (t0, t1, expect) in names.items():
        kept = [w[: len("<PERSON")] for w, _, _ in words(after[start])]
        assert kept == expect, words(after[start])
        x0, x1 = wav(before[start]), wav(after[start])
        a, b = max(0, (t0 - pad) * RATE // 1000), min(x1.size, (t1 + pad) * RATE // 1000)
        assert not x1[a:b].any(), "the name's samples are silent"
        outside = np.ones(x0.size, bool)
        outside[a:b] = False
        assert np.array_equal(x0[outside], x1[outside]), "every other sample is untouched"
        assert x0[a:b].any()
    # records without a name keep their audio byte for byte
    assert after[4]["audio"]["bytes"] == before[4]["audio"]["bytes"]

"""Audio scrubbing: spoken PII muted or beeped from word-timed transcripts; speech without a
transcript flagged pii_unchecked.

Material: machine sound from the synthetic factory's microphone model; real speech from the
ALSA spoken channel names shipped in Debian's sound-theme-freedesktop (skipped where absent;
espeak-ng is not installed here); and a synthetic *stand-in* for voiced speech (a glottal
pulse train with intonation through vowel formant resonators: not a recording of a voice).
The text detector is a small real one defined here (a name list and regexes), so these
tests do not depend on the Presidio text scrubber.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mmdata.config import AudioScrubConfig
from mmdata.errors import InputDataError
from mmdata.scrub.audio import (
    PII_UNCHECKED,
    UNCHECKED_ENTITY,
    AudioResult,
    detect_speech,
    has_speech,
    read_wav,
    scrub_audio,
)
from mmdata.scrub.findings import Finding
from mmdata.scrub.keys import keyed_hash, pseudonym
from mmdata.scrub.transcript import (
    Transcript,
    Word,
    find_sidecar,
    load_sidecar,
    parse_transcript_json,
    parse_webvtt,
    transcript_from_field,
)
from mmdata.synth.config import SynthConfig
from mmdata.synth.plan import build_plan
from mmdata.synth.signals import file_count, mic_chunk

KEY = b"test-key-0123456789abcdef-secret"
MS = 1_000_000
FREEDESKTOP = Path("/usr/share/sounds/freedesktop/stereo")
VOICES = sorted(FREEDESKTOP.glob("audio-channel-*.oga"))
needs_voices = pytest.mark.skipif(not VOICES, reason="sound-theme-freedesktop not installed")


# --- a small real detector ----------------------------------------------------------------

NAMES = ("John Smith", "Maria Garcia", "Smith", "田中", "E. Muller")
OPERATORS = {"PERSON": "pseudonym", "EMAIL_ADDRESS": "placeholder", "PHONE_NUMBER": "mask"}
_PATTERNS = [
    ("EMAIL_ADDRESS", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), 0.95),
    ("PHONE_NUMBER", re.compile(r"(?<!\d)0\d{1,3}-\d{2,4}-\d{4}(?!\d)"), 0.9),
]


class NameListDetector:
    """Names from a list (longest first) and email/phone regexes -> real Findings."""

    def __init__(self, key: bytes = KEY, operators: dict[str, str] | None = None) -> None:
        self.key = key
        self.operators = operators or OPERATORS
        self.calls: list[tuple[str, str | None]] = []

    def __call__(self, text: str, lang: str | None) -> list[Finding]:
        self.calls.append((text, lang))
        spans: list[tuple[str, int, int, float]] = []
        for name in sorted(NAMES, key=len, reverse=True):
            for m in re.finditer(re.escape(name), text):
                if not any(s < m.end() and m.start() < e for _, s, e, _ in spans):
                    spans.append(("PERSON", m.start(), m.end(), 0.85))
        for entity, rx, score in _PATTERNS:
            spans += [(entity, m.start(), m.end(), score) for m in rx.finditer(text)]
        out = []
        for ent, s, e, score in sorted(spans, key=lambda t: t[1]):
            op = self.operators.get(ent, "placeholder")
            digest = keyed_hash(self.key, text[s:e])
            out.append(Finding("text", ent, score, f"test.{ent.lower()}", op, digest, s, e))
        return out


# --- material -------------------------------------------------------------------------------


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def decode(data: bytes, dtype: str = "int16") -> np.ndarray:
    return sf.read(io.BytesIO(data), dtype=dtype, always_2d=True)[0]


VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480))


def voiced_standin(rate: int, seed: int = 0, syllables: int = 6, f0: float = 120.0) -> np.ndarray:
    """SYNTHETIC stand-in for voiced speech (not a voice recording): Rosenberg glottal pulses
    with a falling, jittered pitch contour, through three formant resonators per syllable,
    syllables of 150-300 ms separated by 60-150 ms pauses."""
    rng = np.random.default_rng(seed)
    out = [np.zeros(int(0.2 * rate))]
    for k in range(syllables):
        n = int(rng.uniform(0.15, 0.3) * rate)
        base = f0 * (1 + 0.15 * np.sin(k)) * (1 - 0.05 * k / syllables)
        drift = 1 + 0.01 * rng.normal(size=n).cumsum() / np.sqrt(n)
        phase = np.cumsum(base * np.linspace(1.08, 0.92, n) * drift / rate) % 1.0
        closing = np.where(phase < 0.56, np.cos(np.pi * (phase - 0.4) / 0.32), 0.0)
        pulse = np.where(phase < 0.4, 0.5 * (1 - np.cos(np.pi * phase / 0.4)), closing)
        y = np.diff(pulse, prepend=pulse[0])
        t = np.arange(int(0.03 * rate)) / rate
        for f in VOWELS[int(rng.integers(len(VOWELS)))]:
            y = np.convolve(y, np.exp(-np.pi * (80 + 0.05 * f) * t) * np.sin(2 * np.pi * f * t))[:n]
        y *= np.minimum(1, np.minimum(np.arange(n), n - np.arange(n)) / (0.02 * rate))
        out += [0.5 * y / np.abs(y).max(), np.zeros(int(rng.uniform(0.06, 0.15) * rate))]
    return np.concatenate(out)


@pytest.fixture(scope="module")
def machine_clips() -> dict[int, list[np.ndarray]]:
    """10 s clips of the synthetic factory's microphone (int16), at 16 and 48 kHz."""
    clips: dict[int, list[np.ndarray]] = {}
    for seed, rate in ((5, 16_000), (9, 48_000)):
        plan = build_plan(SynthConfig(assets=3, minutes=2, seed=seed, mic_rate_hz=rate))
        clips[rate] = []
        for asset in plan.assets:
            for k in range(file_count(plan, asset, "microphone")):
                _, pcm = mic_chunk(plan, asset, k)
                clips[rate] += [
                    pcm[s : s + 10 * rate] for s in range(0, pcm.size - 5 * rate, 10 * rate)
                ]
    return clips


def load_voice(path: Path, rate: int) -> np.ndarray:
    x, sr = sf.read(path, dtype="float64", always_2d=True)
    x = x.mean(axis=1)
    n = round(x.size * rate / sr)
    spec = np.fft.rfft(x)[: n // 2 + 1]
    return np.fft.irfft(np.pad(spec, (0, n // 2 + 1 - spec.size)), n) * (n / x.size)


def out_text(r: AudioResult) -> str:
    """The scrubbed transcript's text."""
    assert r.transcript_out is not None
    return r.transcript_out.joined()[0]


def timed(lang: str, *words: tuple[str, int, int]) -> Transcript:
    """A transcript from (word, start ms, end ms) triples."""
    return Transcript(tuple(Word(w, a * MS, b * MS) for w, a, b in words), lang)


def speech_transcript() -> Transcript:
    """'please call John Smith at 090-1234-5678 today' over 0.3 .. 2.4 s."""
    toks = ["please", "call", "John", "Smith", "at", "090-1234-5678", "today"]
    starts = [300, 600, 900, 1200, 1500, 1650, 2100]
    ends = [550, 850, 1150, 1450, 1600, 2050, 2400]
    return Transcript(
        tuple(Word(t, a * MS, b * MS) for t, a, b in zip(toks, starts, ends, strict=True)), "en"
    )


# --- transcripts ------------------------------------------------------------------------------


def test_sidecar_json_accepts_canonical_ms_seconds_whisper_and_record_forms(tmp_path):
    canon = parse_transcript_json(
        '{"format": "mmdata.transcript/1", "language": "en", "words": ['
        '{"word": "call", "start_ns": 100, "end_ns": 200}, {"word": "Ann", "start_ms": 0.5, '
        '"end_ms": 1}]}'
    )
    assert canon.language == "en"
    got = [(w.text, w.start_ns, w.end_ns) for w in canon.words]
    assert got == [("call", 100, 200), ("Ann", 500_000, 1_000_000)]
    whisper = parse_transcript_json(
        {
            "language": "ja",
            "segments": [
                {
                    "start": 0.0,
                    "end": 1.0,
                    "text": " ignored",
                    "words": [
                        {"word": " 田中", "start": 0.1, "end": 0.4},
                        {"word": "さん", "start": 0.4, "end": 0.6},
                    ],
                },
                {"start": 1.0, "end": 2.0, "text": "no word timings here"},
            ],
        }
    )
    assert [w.text for w in whisper.words] == ["田中", "さん", "no", "word", "timings", "here"]
    assert whisper.words[2].start_ns == 1_000_000_000 and whisper.words[5].end_ns == 2_000_000_000
    assert whisper.joined()[0] == "田中さんno word timings here"
    column = transcript_from_field([{"word": "hi", "t0_ns": 5, "t1_ns": 9}])
    assert column is not None and column.to_words() == [{"word": "hi", "t0_ns": 5, "t1_ns": 9}]
    assert transcript_from_field([]) is None and transcript_from_field(None) is None
    round_trip = parse_transcript_json(whisper.dumps())
    assert round_trip == whisper


@pytest.mark.parametrize(
    "bad",
    [
        "{not json",
        "[]",
        '{"words": [{"word": "a"}]}',
        '{"words": [{"word": 3, "start": 0, "end": 1}]}',
        '{"words": [{"word": "a", "start": 2, "end": 1}]}',
        '{"words": [{"word": "a", "start": "x", "end": 1}]}',
        '{"text": "no words"}',
    ],
)
def test_malformed_sidecar_json_is_a_clear_input_error(bad):
    with pytest.raises(InputDataError, match="transcript"):
        parse_transcript_json(bad)


def test_webvtt_word_timestamps_cue_level_timing_voice_tags_and_entities():
    vtt = (
        "\ufeffWEBVTT - shift 2\n\nNOTE operator radio\n\n"
        "1\n00:00:01.000 --> 00:00:03.000 align:start\n"
        "<v Dispatcher>call <00:00:01.500><c>John</c> <00:00:02.000>Smith &amp; co\n\n"
        "01:00:00.000 --> 01:00:01.250\nno inline times\n"
    )
    t = parse_webvtt(vtt, "en")
    got = [(w.text, w.start_ns // MS, w.end_ns // MS) for w in t.words]
    assert got == [("call", 1000, 1500), ("John", 1500, 2000), ("Smith", 2000, 3000),
                   ("&", 2000, 3000), ("co", 2000, 3000), ("no", 3_600_000, 3_601_250),
                   ("inline", 3_600_000, 3_601_250), ("times", 3_600_000, 3_601_250)]  # fmt: skip
    assert "Dispatcher" not in t.joined()[0]  # the voice tag (a speaker's name) is dropped
    with pytest.raises(InputDataError, match="WEBVTT"):
        parse_webvtt("00:01.000 --> 00:02.000\nhi")
    with pytest.raises(InputDataError, match="timing"):
        parse_webvtt("WEBVTT\n\n00:01.000 -> 00:02.000\nhi")


def test_sidecar_found_next_to_the_audio_file(tmp_path):
    audio = tmp_path / "mic-press-1_20260301T080000Z.wav"
    audio.write_bytes(wav_bytes(np.zeros(160, np.int16), 16_000))
    assert find_sidecar(audio) is None and load_sidecar(audio) is None
    (tmp_path / "mic-press-1_20260301T080000Z.vtt").write_text(
        "WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n", encoding="utf-8"
    )
    assert load_sidecar(audio, "en") == Transcript((Word("hello", 0, 1_000_000_000),), "en")
    (tmp_path / "mic-press-1_20260301T080000Z.transcript.json").write_text(
        '{"language": "en", "words": [{"word": "hi", "start_ms": 0, "end_ms": 10}]}'
    )
    assert str(find_sidecar(audio)).endswith(".transcript.json")  # JSON wins over VTT
    (tmp_path / "mic-press-1_20260301T080000Z.transcript.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(InputDataError):
        load_sidecar(audio)


def test_window_cuts_a_file_transcript_to_a_records_audio():
    t = speech_transcript()
    w = t.window(1_000 * MS, 2_000 * MS)
    assert [x.text for x in w.words] == ["John", "Smith", "at", "090-1234-5678"]
    assert w.words[0] == Word("John", 0, 150 * MS) and w.words[-1].end_ns == 1_000 * MS


# --- scrubbing ------------------------------------------------------------------------------


def _stereo_speech(rate: int) -> np.ndarray:
    left = voiced_standin(rate, seed=1)
    x = np.zeros((int(2.6 * rate), 2))
    x[: left.size, 0] = left
    x[: left.size, 1] = 0.5 * left[::-1]
    return np.rint(x * 20000).astype(np.int16)


def test_pii_words_are_muted_sample_exactly_in_every_channel_and_nothing_else_changes():
    rate = 16_000
    pcm = _stereo_speech(rate)
    cfg = AudioScrubConfig(padding_ms=100)
    detect = NameListDetector()
    r = scrub_audio(wav_bytes(pcm, rate), speech_transcript(), cfg, detect, KEY)
    out = decode(r.wav_bytes_out)
    # John Smith: 0.9-1.45 s, phone 1.65-2.05 s, each +-100 ms -> samples [12800, 24800) and
    # [24800, 34400): one muted stretch 0.8 .. 2.15 s
    muted = np.zeros(pcm.shape[0], bool)
    muted[int(0.8 * rate) : int(2.15 * rate)] = True
    assert np.all(out[muted] == 0)
    assert np.array_equal(out[~muted], pcm[~muted])
    assert [f.entity for f in r.findings] == ["PERSON", "PHONE_NUMBER"]
    person, phone = r.findings
    assert person.modality == "audio" and person.field == "audio"
    assert (person.t0_ns, person.t1_ns) == (800 * MS, 1550 * MS)
    assert (phone.t0_ns, phone.t1_ns) == (1550 * MS, 2150 * MS)
    assert person.operator == "mute+pseudonym" and phone.operator == "mute+mask"
    assert person.original_hash == keyed_hash(KEY, "John Smith")
    text = speech_transcript().joined()[0]
    assert text[person.start : person.end] == "John Smith"
    # the scrubbed transcript travels with the result; tokens where the PII was
    scrubbed = out_text(r)
    token = pseudonym(KEY, "PERSON", "John Smith")
    assert scrubbed == f"please call {token} at ************* today"
    assert [scrubbed[a:b] for a, b in filter(None, r.out_spans)] == [token, "*" * 13]
    assert r.transcript_out is not None
    assert "John" not in r.transcript_out.dumps() and "1234" not in r.transcript_out.dumps()
    assert r.flags == () and not r.drop
    assert detect.calls == [(text, "en")]


def test_beep_mode_writes_the_configured_sine_and_float_and_24_bit_audio_round_trip_exactly():
    rate = 44_100  # 1e9 / rate is not an integer: boundaries are floor(t0*rate), ceil(t1*rate)
    rng = np.random.default_rng(3)
    base = rng.uniform(-0.5, 0.5, (rate, 3))
    words = Transcript((Word("ask", 0, 200 * MS), Word("Smith", 333_333_333, 444_444_444)), "en")
    i0, i1 = (333_333_333 - 50 * MS) * rate // 10**9, -(-(444_444_444 + 50 * MS) * rate // 10**9)
    cfg = AudioScrubConfig(mode="beep", padding_ms=50, beep_hz=800, beep_dbfs=-12)
    tone = 10 ** (-12 / 20) * np.sin(2 * np.pi * 800 * np.arange(i1 - i0) / rate)
    for subtype, dtype, full in (("FLOAT", "float32", 1.0), ("PCM_24", "int32", 2**31 - 1)):
        data = wav_bytes(base.astype(np.float32), rate, subtype)
        before = decode(data, dtype)
        r = scrub_audio(data, words, cfg, NameListDetector(), KEY)
        out = decode(r.wav_bytes_out, dtype)
        assert sf.info(io.BytesIO(r.wav_bytes_out)).subtype == subtype
        keep = np.ones(rate, bool)
        keep[i0:i1] = False
        assert np.array_equal(out[keep], before[keep])
        for ch in range(3):
            np.testing.assert_allclose(out[i0:i1, ch] / full, tone, atol=2**-22)
        assert r.findings[0].operator == "beep+pseudonym"
        assert r.findings[0].t0_ns == i0 * 10**9 // rate


def test_audio_without_findings_is_returned_byte_for_byte():
    data = wav_bytes(_stereo_speech(16_000), 16_000)
    words = Transcript((Word("belt", 0, 300 * MS), Word("check", 300 * MS, 700 * MS)), "en")
    r = scrub_audio(data, words, AudioScrubConfig(check_coverage=False), NameListDetector(), KEY)
    assert r.wav_bytes_out is data and r.findings == [] and r.transcript_out == words


def test_operators_redact_keep_and_pii_glued_into_one_word():
    rate = 8_000
    data = wav_bytes(np.full((rate * 2, 1), 1000, np.int16), rate)
    glued = "maria@example.com/03-1234-5678"
    words = timed(
        "en", ("mail", 0, 100), (glued, 200, 900), ("Smith", 1000, 1200), ("ok", 1300, 1400)
    )
    ops = {"EMAIL_ADDRESS": "redact", "PHONE_NUMBER": "placeholder", "PERSON": "keep"}
    r = scrub_audio(
        data, words, AudioScrubConfig(padding_ms=0), NameListDetector(operators=ops), KEY
    )
    assert out_text(r) == "mail /<PHONE_NUMBER> Smith ok"
    assert [f.operator for f in r.findings] == ["mute+redact", "mute+placeholder", "keep"]
    assert r.out_spans[0] is None  # nothing written for redact
    assert r.out_spans[2] == (21, 26)  # keep: the span still points at the (kept) word
    out = decode(r.wav_bytes_out)[:, 0]
    assert np.all(out[int(0.2 * rate) : int(0.9 * rate)] == 0)
    assert np.all(out[int(0.9 * rate) :] == 1000)  # "Smith" kept: its audio too
    assert np.all(out[: int(0.2 * rate)] == 1000)


def test_overlapping_findings_keep_the_highest_score():
    def detect(text: str, lang: str | None) -> list[Finding]:
        return [
            Finding("text", "PERSON", 0.6, "a", "placeholder", "", start=0, end=10),
            Finding("text", "EMPLOYEE_ID", 0.9, "b", "placeholder", "", start=5, end=10),
        ]

    data = wav_bytes(np.zeros((8000, 1), np.int16), 8000)
    words = Transcript((Word("John", 0, 100 * MS), Word("Smith", 100 * MS, 200 * MS)), "en")
    r = scrub_audio(data, words, AudioScrubConfig(), detect, KEY)
    assert [f.entity for f in r.findings] == ["EMPLOYEE_ID"]
    assert out_text(r) == "John <EMPLOYEE_ID>"


def test_japanese_transcript_words_are_joined_without_spaces():
    rate = 16_000
    data = wav_bytes(np.full((rate, 1), 500, np.int16), rate)
    words = timed("ja", ("担当", 0, 200), ("は", 200, 300), ("田中", 300, 500), ("さん", 500, 650),
                  ("です", 650, 800))  # fmt: skip
    detect = NameListDetector()
    r = scrub_audio(data, words, AudioScrubConfig(padding_ms=0), detect, KEY)
    assert detect.calls == [("担当は田中さんです", "ja")]
    assert out_text(r) == f"担当は{pseudonym(KEY, 'PERSON', '田中')}さんです"
    assert (r.findings[0].t0_ns, r.findings[0].t1_ns) == (300 * MS, 500 * MS)
    out = decode(r.wav_bytes_out)[:, 0]
    assert np.all(out[4800:8000] == 0) and out[4799] == 500 and out[8000] == 500


def test_record_column_transcript_and_words_past_the_end_of_the_audio():
    data = wav_bytes(np.full((8000, 1), 7, np.int16), 8000)  # 1 s
    column = [
        {"word": "call", "t0_ns": 0, "t1_ns": 500 * MS},
        {"word": "Smith", "t0_ns": 900 * MS, "t1_ns": 3_000 * MS},
    ]
    r = scrub_audio(data, column, AudioScrubConfig(padding_ms=0), NameListDetector(), KEY)
    out = decode(r.wav_bytes_out)[:, 0]
    assert np.all(out[7200:] == 0) and np.all(out[:7200] == 7)
    assert (r.findings[0].t0_ns, r.findings[0].t1_ns) == (900 * MS, 1_000 * MS)


def test_long_transcript_with_many_findings_is_scrubbed_quickly():
    rate = 8_000
    n_words = 60_000  # ~400 KB of transcript over 10 minutes
    data = wav_bytes(np.full((600 * rate, 1), 3, np.int16), rate)
    words = tuple(
        Word("Smith" if i % 20 == 7 else f"w{i}", i * 10 * MS, i * 10 * MS + 8 * MS)
        for i in range(n_words)
    )
    t0 = time.perf_counter()
    r = scrub_audio(
        data, Transcript(words, "en"), AudioScrubConfig(padding_ms=0), NameListDetector(), KEY
    )
    elapsed = time.perf_counter() - t0
    assert len(r.findings) == n_words // 20
    assert "Smith" not in out_text(r) and out_text(r).count("<PERSON_") == n_words // 20
    out = decode(r.wav_bytes_out)[:, 0]
    assert int((out == 0).sum()) == (n_words // 20) * 64  # 8 ms per name at 8 kHz
    assert elapsed < 10, f"{elapsed:.1f} s"


# --- speech without a transcript -----------------------------------------------------------


def test_untranscribed_speech_is_flagged_pii_unchecked_and_dropped_per_config():
    rate = 16_000
    data = wav_bytes(_stereo_speech(rate), rate)
    empty: tuple[Transcript | list[dict[str, object]] | None, ...] = (None, [], timed("en"))
    for transcript in empty:
        r = scrub_audio(data, transcript, AudioScrubConfig(), NameListDetector(), KEY)
        assert r.flags == (PII_UNCHECKED,) and not r.drop
        assert r.wav_bytes_out is data
        (f,) = r.findings
        assert (f.entity, f.modality, f.operator, f.original_hash) == (
            UNCHECKED_ENTITY,
            "audio",
            "flag",
            "",
        )
        assert f.t0_ns is not None and f.t1_ns is not None
        assert 0 <= f.t0_ns < f.t1_ns <= 2_600 * MS
    r = scrub_audio(
        data, None, AudioScrubConfig(untranscribed_speech="drop"), NameListDetector(), KEY
    )
    assert r.drop and r.findings[0].operator == "drop"
    assert has_speech(data, AudioScrubConfig())


def test_speech_the_transcript_does_not_cover_is_flagged():
    rate = 16_000
    pcm = np.zeros((6 * rate, 1), np.int16)
    speech = np.rint(voiced_standin(rate, seed=2, syllables=8) * 20000).astype(np.int16)
    pcm[3 * rate : 3 * rate + speech.size, 0] = speech  # speech at 3-5 s
    data = wav_bytes(pcm, rate)
    early = Transcript((Word("belt", 100 * MS, 400 * MS), Word("ok", 500 * MS, 800 * MS)), "en")
    r = scrub_audio(data, early, AudioScrubConfig(), NameListDetector(), KEY)
    assert r.flags == (PII_UNCHECKED,) and (r.findings[0].t0_ns or 0) >= 3_000 * MS
    covering = Transcript(
        (Word("belt", 3_100 * MS, 4_000 * MS), Word("ok", 4_000 * MS, 5_000 * MS)), "en"
    )
    assert scrub_audio(data, covering, AudioScrubConfig(), NameListDetector(), KEY).flags == ()
    off = AudioScrubConfig(check_coverage=False)
    assert scrub_audio(data, early, off, NameListDetector(), KEY).flags == ()


def test_factory_machine_sound_is_not_speech(machine_clips):
    for rate, clips in machine_clips.items():
        assert len(clips) >= 18
        hits = [i for i, c in enumerate(clips) if detect_speech(c, rate)]
        assert hits == [], f"machine clips counted as speech at {rate} Hz: {hits}"
    data = wav_bytes(machine_clips[16_000][0][:, None], 16_000)
    r = scrub_audio(
        data, None, AudioScrubConfig(untranscribed_speech="drop"), NameListDetector(), KEY
    )
    assert r.flags == () and r.findings == [] and not r.drop


def test_synthetic_voiced_standin_is_speech_alone_and_in_factory_noise(machine_clips):
    for rate in (16_000, 48_000):
        for f0 in (110.0, 210.0):
            segs = detect_speech(voiced_standin(rate, seed=4, f0=f0), rate)
            assert segs and sum(s.voiced_ns for s in segs) >= 500 * MS
        machine = machine_clips[rate][1].astype(np.float64) / 32768
        voice = voiced_standin(rate, seed=5)
        mix = machine.copy()
        mix[3 * rate : 3 * rate + voice.size] += voice * np.std(machine) / np.std(voice[voice != 0])
        segs = detect_speech(mix, rate)  # 0 dB speech-to-machine
        assert segs and all(
            s.t0_ns >= 3_000 * MS and s.t1_ns <= 3_000 * MS + voice.size * 10**9 // rate
            for s in segs
        )


@needs_voices
def test_real_recorded_speech_is_detected_alone_and_mixed_into_factory_noise(machine_clips):
    rate = 16_000
    for k, path in enumerate(VOICES):
        voice = load_voice(path, rate)
        assert detect_speech(voice, rate), path.name
        machine = machine_clips[rate][k % len(machine_clips[rate])].astype(np.float64) / 32768
        loud = voice[np.abs(voice) > 0.02]
        mix = machine.copy()
        mix[4 * rate : 4 * rate + voice.size] += (
            voice * np.std(machine) / np.sqrt(np.mean(loud**2)) * 2
        )
        segs = detect_speech(mix, rate)  # +6 dB
        end = 4_000 * MS + voice.size * 10**9 // rate
        assert segs and all(s.t0_ns >= 3_900 * MS and s.t1_ns <= end + 100 * MS for s in segs), (
            path.name
        )


@pytest.mark.skipif(not FREEDESKTOP.is_dir(), reason="sound-theme-freedesktop not installed")
def test_tones_bells_clicks_and_noise_are_not_speech():
    names = ["audio-test-signal", "phone-outgoing-busy", "phone-incoming-call", "bell",
             "complete", "alarm-clock-elapsed", "camera-shutter", "dialog-warning",
             "service-login", "trash-empty"]  # fmt: skip
    for name in names:
        x, sr = sf.read(FREEDESKTOP / f"{name}.oga", dtype="float32", always_2d=True)
        assert detect_speech(x, sr) == [], name


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"RIFF....WAVEfmt garbage", b"\x00" * 100])
def test_undecodable_audio_is_an_input_error(data):
    with pytest.raises(InputDataError, match="audio does not decode"):
        scrub_audio(data, speech_transcript(), AudioScrubConfig(), NameListDetector(), KEY)


def test_degenerate_audio_never_crashes():
    cfg = AudioScrubConfig()
    for pcm, rate in ((np.zeros((0, 1), np.int16), 16_000), (np.zeros((1, 2), np.int16), 8_000),
                      (np.zeros((16_000, 1), np.int16), 16_000)):  # fmt: skip
        r = scrub_audio(wav_bytes(pcm, rate), None, cfg, NameListDetector(), KEY)
        assert r.flags == ()
        r = scrub_audio(wav_bytes(pcm, rate), speech_transcript(), cfg, NameListDetector(), KEY)
        assert read_wav(r.wav_bytes_out).samples.shape == pcm.shape
    nan = np.full((8000, 1), np.nan, np.float32)
    assert detect_speech(read_wav(wav_bytes(nan, 8000, "FLOAT")).samples, 8000) == []
    assert detect_speech(np.zeros(10), 16_000) == [] and detect_speech(np.zeros(0), 16_000) == []

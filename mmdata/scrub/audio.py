"""PII in audio: spoken PII muted or beeped from a word-timed transcript; speech without a
transcript flagged ``pii_unchecked``.

:func:`scrub_audio` joins the transcript's words (see :mod:`mmdata.scrub.transcript`), runs
the text detector on them, replaces the PII words in the transcript by the operator's token
(placeholder, pseudonym, mask, redact; ``keep`` leaves both transcript and audio alone) and
silences (``mode: mute``) or overwrites with a sine (``mode: beep``) the matching audio:
the words' time range widened by ``padding_ms`` on each side, every channel, sample-exact
(samples ``floor(t0·rate) .. ceil(t1·rate)``); every other sample is left bit-identical,
and audio without findings is returned byte-for-byte.

Speech detector (:func:`detect_speech`), for audio with no transcript (and, with
``check_coverage``, speech the transcript does not cover). It runs on the channel mean in
30 ms frames every 10 ms, in blocks of at most 20 s:

1. *Energy over the background*: a per-frequency noise floor (the 20th percentile of each
   FFT bin over the block) is subtracted (spectral subtraction, 2x floor); a frame is
   *active* when its 250-4000 Hz energy is >= 6 dB over the floor's. Stationary machine
   sound (mains hum, motor whine, fans, steady noise) sits in the floor and vanishes.
2. *Voicing*: on the denoised frame, the normalized cross-correlation (NCCF) must peak
   >= 0.5 with a fundamental between 80 and 400 Hz (the shortest strong period, so a pure
   tone above 400 Hz is not mistaken for its sub-harmonic), and >= 3 of the first 10
   harmonics must carry energy within 30 dB of the frame's strongest bin (pure tones,
   clicks, impacts and broadband noise fail this).
3. *Duration*: voiced frames are grouped into runs (gaps <= 30 ms); runs with >= 50 ms of
   voicing (a vowel) count, and the audio contains speech when they add up to
   ``min_speech_ms`` (default 150 ms).

Measured while tuning (the tests re-check a subset): 0 of 144 ten-second clips of the
synthetic factory's microphone (hum, whine, fan, rattle faults, hammer taps; 16 and 48 kHz)
counted as speech, nor any of the 27 freedesktop bell/tone/noise/alert/jingle sounds; the 8
ALSA spoken channel-name recordings ("Front Left", ...) are detected alone, in 2 s windows
of back-to-back speech (8/8), and mixed into factory noise at +6 dB (40/40) and 0 dB
speech-to-machine RMS (39/40), about half at -6 dB. Singing was not tested: harmonic sound
with a moving pitch in 80-400 Hz may count as speech (erring towards flagging). Speed:
~400x real time at 16 kHz, ~180x at 48 kHz (one core).

>>> import io, numpy as np, soundfile as sf
>>> from mmdata.config import AudioScrubConfig
>>> from mmdata.scrub.findings import Finding
>>> from mmdata.scrub.transcript import Transcript, Word
>>> buf = io.BytesIO()
>>> sf.write(buf, np.full(16000, 1000, np.int16), 16000, format="WAV", subtype="PCM_16")
>>> words = (Word("call", 100_000_000, 300_000_000), Word("Ann", 400_000_000, 600_000_000))
>>> def detect(text, lang):
...     i = text.find("Ann")
...     return [Finding("text", "PERSON", 0.9, "names", "placeholder", "", start=i, end=i + 3)]
>>> r = scrub_audio(buf.getvalue(), Transcript(words, "en"), AudioScrubConfig(), detect,
...                 b"k" * 32)
>>> r.transcript_out.joined()[0], r.findings[0].t0_ns, r.findings[0].t1_ns
('call <PERSON>', 280000000, 720000000)
>>> x, _ = sf.read(io.BytesIO(r.wav_bytes_out), dtype="int16")
>>> int(x[4479]), int(x[4480]), int(x[11519]), int(x[11520])
(1000, 0, 0, 1000)
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

from mmdata.config import AudioScrubConfig
from mmdata.errors import InputDataError
from mmdata.scrub.findings import Finding
from mmdata.scrub.keys import keyed_hash, pseudonym
from mmdata.scrub.transcript import Transcript, Word, transcript_from_field, word_range

#: ``detect(text, language) -> findings`` with character spans in ``text`` (modality "text").
TextDetector = Callable[[str, str | None], list[Finding]]

PII_UNCHECKED = "pii_unchecked"
UNCHECKED_ENTITY = "UNTRANSCRIBED_SPEECH"
VAD_NAME = "mmdata.vad"
VAD_VERSION = "mmdata-vad/1"
_NS = 1_000_000_000

# voice-activity detector parameters (documented in the module docstring)
_FRAME_S, _HOP_S, _BLOCK_S = 0.030, 0.010, 20.0
_ACTIVE_DB, _FLOOR_PCT, _FLOOR_GAIN = 6.0, 20.0, 2.0
_BAND_HZ, _F0_HZ = (250.0, 4000.0), (80.0, 400.0)
_NCCF_MIN, _HARMONICS_MIN, _HARMONIC_DB = 0.5, 3, -30.0
_RUN_GAP, _RUN_MIN = 3, 5  # frames
_COVER_MARGIN_NS = 500_000_000


@dataclass(frozen=True)
class SpeechSegment:
    """A stretch of audio with voiced speech: ``[t0_ns, t1_ns)`` and its voiced time."""

    t0_ns: int
    t1_ns: int
    voiced_ns: int


@dataclass(frozen=True)
class AudioResult:
    """What :func:`scrub_audio` returns.

    ``out_spans[i]`` is the character span of ``findings[i]``'s token in
    ``transcript_out.joined()[0]`` (None where nothing was replaced); ``drop`` is True when
    the record must be dropped (``pii_unchecked`` and ``untranscribed_speech: drop``).
    """

    wav_bytes_out: bytes
    transcript_out: Transcript | None
    findings: list[Finding]
    flags: tuple[str, ...]
    out_spans: list[tuple[int, int] | None]
    speech: tuple[SpeechSegment, ...]
    drop: bool


@dataclass(frozen=True)
class Wav:
    """Decoded WAV: ``samples`` (frames x channels) in the dtype that round-trips exactly."""

    samples: np.ndarray
    sample_rate: int
    subtype: str
    format: str

    def as_float(self) -> np.ndarray:
        """Samples scaled to [-1, 1] (float64)."""
        x = self.samples
        if x.dtype.kind == "i":
            return x.astype(np.float64) / float(-np.iinfo(x.dtype).min)
        return np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=1.0, neginf=-1.0)


_EXACT_DTYPE = {"FLOAT": "float32", "DOUBLE": "float64", "PCM_16": "int16"}


def read_wav(wav_bytes: bytes) -> Wav:
    """Decode WAV bytes; :class:`InputDataError` when they are not decodable audio.

    >>> read_wav(b"not a wav")
    Traceback (most recent call last):
    ...
    mmdata.errors.InputDataError: audio does not decode: Format not recognised.
    """
    try:
        info = sf.info(io.BytesIO(wav_bytes))
        dtype = _EXACT_DTYPE.get(info.subtype, "int32")
        data, rate = sf.read(io.BytesIO(wav_bytes), dtype=dtype, always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        msg = str(err).split(": ", 1)[-1] if "Error opening" in str(err) else str(err)
        raise InputDataError(f"audio does not decode: {msg}") from None
    if rate <= 0:
        raise InputDataError(f"audio has an invalid sample rate {rate}")
    return Wav(data, int(rate), info.subtype, info.format)


def write_wav(wav: Wav) -> bytes:
    """Encode ``wav`` with its own format and subtype."""
    buf = io.BytesIO()
    sf.write(buf, wav.samples, wav.sample_rate, format=wav.format, subtype=wav.subtype)
    return buf.getvalue()


# --- voice-activity detection ---------------------------------------------------------------


def _frame_features(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: active (energy over floor) and voiced (periodic + harmonic) flags."""
    n, hop = max(8, round(_FRAME_S * sr)), max(1, round(_HOP_S * sr))
    if x.size < n:
        x = np.pad(x, (0, n - x.size))
    nf = 1 + (x.size - n) // hop
    idx = np.arange(n)[None, :] + hop * np.arange(nf)[:, None]
    max_lag = min(n - 1, int(sr / _F0_HZ[0]))
    nfft = 1 << int(np.ceil(np.log2(n + max_lag + 1)))
    spec = np.fft.rfft(x[idx] * np.hanning(n), nfft, axis=1)
    power = spec.real**2 + spec.imag**2
    freqs = np.fft.rfftfreq(nfft, 1.0 / sr)
    eps = 1e-9 * n  # about -90 dBFS: digital silence is neither active nor voiced
    floor = np.percentile(power, _FLOOR_PCT, axis=0) + eps
    band = (freqs >= _BAND_HZ[0]) & (freqs <= _BAND_HZ[1])
    active = 10 * np.log10((power[:, band].sum(1) + eps) / floor[band].sum()) >= _ACTIVE_DB
    excess = np.maximum(power - _FLOOR_GAIN * floor, 0.0)
    excess[:, (freqs > _BAND_HZ[1]) | (freqs < 60.0)] = 0.0
    # denoised frames -> normalized cross-correlation over lags 1 ms .. 1/80 s
    y = np.fft.irfft(spec * np.sqrt(excess / (power + 1e-30)), nfft, axis=1)[:, :n]
    ac = np.fft.irfft(np.abs(np.fft.rfft(y, nfft, axis=1)) ** 2, nfft, axis=1)[:, : max_lag + 1]
    csum = np.cumsum(y * y, axis=1)
    lags = np.arange(max_lag + 1)
    head = csum[:, n - 1 - lags]  # energy of y[0 : n-lag]
    tail = csum[:, -1:] - np.concatenate([np.zeros((nf, 1)), csum[:, :max_lag]], axis=1)
    nccf = ac / np.sqrt(head * tail + 1e-30)
    lo = max(1, int(sr / 1000))
    seg = nccf[:, lo:]
    peak = seg.max(axis=1)
    period = np.argmax(seg >= 0.9 * peak[:, None], axis=1) + lo  # shortest strong period
    f0 = sr / period
    rows = np.arange(nf)
    top = excess.max(axis=1) * 10 ** (_HARMONIC_DB / 10) + 1e-30
    n_harm = np.zeros(nf, dtype=np.int64)
    last = excess.shape[1] - 2
    for k in range(1, 11):
        b = np.clip(np.rint(k * f0 / freqs[1]).astype(np.int64), 1, last)
        near = np.maximum(np.maximum(excess[rows, b - 1], excess[rows, b]), excess[rows, b + 1])
        n_harm += (k * f0 <= _BAND_HZ[1]) & (near >= top)
    voiced = (
        active
        & (peak >= _NCCF_MIN)
        & (f0 >= _F0_HZ[0])
        & (f0 <= _F0_HZ[1])
        & (n_harm >= _HARMONICS_MIN)
    )
    return active, voiced


def _runs(mask: np.ndarray, gap: int) -> list[tuple[int, int]]:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > gap + 1)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]]) + 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def detect_speech(
    samples: np.ndarray, sample_rate: int, min_speech_ms: int = 150
) -> list[SpeechSegment]:
    """Voiced-speech segments of ``samples`` (1-D, or frames x channels; float or int PCM).

    Empty when the voiced total is below ``min_speech_ms``; see the module docstring.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> t = np.arange(32000) / 16000
    >>> machine = 0.05 * np.sin(2 * np.pi * 100 * t) + 0.01 * rng.normal(size=t.size)
    >>> detect_speech(machine, 16000)
    []
    """
    x = np.asarray(samples)
    if x.dtype.kind == "i":
        x = x.astype(np.float64) / float(-np.iinfo(x.dtype).min)
    x = np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1 or sample_rate <= 0 or x.size == 0:
        return []
    hop = max(1, round(_HOP_S * sample_rate))
    block = max(hop, int(_BLOCK_S * sample_rate) // hop * hop)
    overlap = round(_FRAME_S * sample_rate)
    voiced_parts: list[np.ndarray] = []
    pos = 0
    while pos < x.size:
        end = x.size if x.size - (pos + block) < block // 4 else pos + block
        _, voiced = _frame_features(x[pos : end + overlap], sample_rate)
        m = -(-(end - pos) // hop)  # frames starting in [pos, end)
        voiced_parts.append(np.pad(voiced[:m], (0, max(0, m - voiced.size))))
        pos = end
    voiced = np.concatenate(voiced_parts)
    runs = [(a, b) for a, b in _runs(voiced, _RUN_GAP) if int(voiced[a:b].sum()) >= _RUN_MIN]
    hop_ns = hop * _NS / sample_rate
    total = sum(int(voiced[a:b].sum()) for a, b in runs) * hop_ns
    if total < min_speech_ms * 1_000_000:
        return []
    frame_ns = round(_FRAME_S * _NS)
    dur_ns = x.size * _NS // sample_rate
    return [
        SpeechSegment(
            round(a * hop_ns), min(dur_ns, round((b - 1) * hop_ns) + frame_ns),
            round(int(voiced[a:b].sum()) * hop_ns),
        )
        for a, b in runs
    ]  # fmt: skip


# --- transcript scrubbing -------------------------------------------------------------------


def replacement(operator: str, entity: str, original: str, key: bytes) -> str:
    """The token that replaces ``original`` in a transcript.

    >>> replacement("placeholder", "PERSON", "Ann", b"k" * 32)
    '<PERSON>'
    >>> replacement("mask", "PHONE_NUMBER", "555-1234", b"k" * 32)
    '********'
    """
    if operator == "pseudonym":
        return pseudonym(key, entity, original)
    if operator == "mask":
        return "*" * len(original)
    if operator == "redact":
        return ""
    if operator == "keep":
        return original
    return f"<{entity}>"


def _non_overlapping(findings: Sequence[Finding], n_chars: int) -> list[Finding]:
    """Highest score (then longest) wins where spans overlap; sorted by start."""
    spans = [f for f in findings if f.start is not None and f.end is not None]
    ranked = sorted(spans, key=lambda f: (-f.score, -((f.end or 0) - (f.start or 0)), f.start))
    taken: list[Finding] = []
    for f in ranked:
        s, e = max(0, f.start or 0), min(n_chars, f.end or 0)
        if e > s and all(e <= (g.start or 0) or s >= (g.end or 0) for g in taken):
            taken.append(f)
    return sorted(taken, key=lambda f: f.start or 0)


@dataclass
class _Hit:
    finding: Finding
    first: int  # word indices [first, last]
    last: int
    token: str


def _map_to_words(
    findings: list[Finding], spans: list[tuple[int, int]], text: str, key: bytes
) -> list[_Hit]:
    hits = []
    starts, ends = [a for a, _ in spans], [b for _, b in spans]
    for f in findings:
        r = word_range(starts, ends, f.start or 0, f.end or 0)
        if r is not None:
            token = replacement(f.operator, f.entity, text[f.start or 0 : f.end or 0], key)
            hits.append(_Hit(f, r[0], r[1], token))
    return hits


def _clusters(hits: list[_Hit]) -> list[list[int]]:
    """Hits (sorted by start) grouped where they share words."""
    groups: list[list[int]] = []
    last = -1
    for k, hit in enumerate(hits):
        if groups and hit.first <= last:
            groups[-1].append(k)
            last = max(last, hit.last)
        else:
            groups.append([k])
            last = hit.last
    return groups


def _rewrite(
    transcript: Transcript, text: str, spans: list[tuple[int, int]], hits: list[_Hit]
) -> tuple[Transcript, list[tuple[int, int] | None]]:
    """Replace the hit words; return the new transcript and each hit's token span in it.

    Words touched by one or more hits become one word: the text before the first hit in
    the first word + tokens + the text after the last hit, timed over all of them.
    """
    words = transcript.words
    new_words: list[Word] = []
    token_at: dict[int, tuple[int, int, int]] = {}  # hit -> (new word index, offset, length)
    done = 0
    for group in _clusters(hits):
        first, last = hits[group[0]].first, max(hits[k].last for k in group)
        new_words.extend(words[done:first])
        c0, c1 = spans[first][0], spans[last][1]
        piece, pos = "", c0
        offsets: list[tuple[int, int, int]] = []
        for k in group:
            f = hits[k].finding
            piece += text[pos : max(pos, f.start or 0)]
            offsets.append((k, len(piece), len(hits[k].token)))
            piece += hits[k].token
            pos = max(pos, min(f.end or 0, c1))
        piece += text[pos:c1]
        if piece.strip():
            for k, off, n in offsets:
                token_at[k] = (len(new_words), off, n)
            span = words[first : last + 1]
            t0, t1 = min(w.start_ns for w in span), max(w.end_ns for w in span)
            new_words.append(Word(piece, t0, t1))
        done = last + 1
    new_words.extend(words[done:])
    out = Transcript(tuple(new_words), transcript.language)
    _, new_spans = out.joined()
    out_spans: list[tuple[int, int] | None] = []
    for k in range(len(hits)):
        if k in token_at and token_at[k][2] > 0:
            w, off, n = token_at[k]
            out_spans.append((new_spans[w][0] + off, new_spans[w][0] + off + n))
        else:
            out_spans.append(None)
    return out, out_spans


# --- audio ------------------------------------------------------------------------------


def _sample_range(t0_ns: int, t1_ns: int, pad_ns: int, rate: int, n: int) -> tuple[int, int]:
    i0 = max(0, (t0_ns - pad_ns) * rate // _NS)
    i1 = min(n, -(-(t1_ns + pad_ns) * rate // _NS))
    return i0, max(i0, i1)


def _apply(wav: Wav, ranges: list[tuple[int, int]], cfg: AudioScrubConfig) -> Wav:
    out = wav.samples.copy()
    amp = 10 ** (cfg.beep_dbfs / 20)
    for i0, i1 in ranges:
        if cfg.mode == "mute":
            out[i0:i1] = 0
            continue
        tone = amp * np.sin(2 * np.pi * cfg.beep_hz * np.arange(i1 - i0) / wav.sample_rate)
        if out.dtype.kind == "i":
            full = float(np.iinfo(out.dtype).max)
            out[i0:i1] = np.rint(tone * full).astype(out.dtype)[:, None]
        else:
            out[i0:i1] = tone.astype(out.dtype)[:, None]
    return Wav(out, wav.sample_rate, wav.subtype, wav.format)


def _uncovered(
    speech: list[SpeechSegment], transcript: Transcript, min_ns: int
) -> list[SpeechSegment]:
    cover = [(w.start_ns - _COVER_MARGIN_NS, w.end_ns + _COVER_MARGIN_NS) for w in transcript.words]
    out = []
    for seg in speech:
        if not any(a <= seg.t0_ns and b >= seg.t1_ns for a, b in cover):
            overlap = sum(max(0, min(b, seg.t1_ns) - max(a, seg.t0_ns)) for a, b in cover)
            if overlap < (seg.t1_ns - seg.t0_ns) // 2:
                out.append(seg)
    return out if sum(s.voiced_ns for s in out) >= min_ns else []


def _unchecked_finding(segments: list[SpeechSegment], cfg: AudioScrubConfig) -> Finding:
    return Finding(
        modality="audio",
        entity=UNCHECKED_ENTITY,
        score=1.0,
        recognizer=VAD_NAME,
        operator="drop" if cfg.untranscribed_speech == "drop" else "flag",
        original_hash="",
        t0_ns=segments[0].t0_ns,
        t1_ns=segments[-1].t1_ns,
        field="audio",
        model=VAD_VERSION,
    )


def has_speech(wav_bytes: bytes, cfg: AudioScrubConfig) -> bool:
    """Whether the WAV holds speech per :func:`detect_speech` (InputDataError if undecodable)."""
    wav = read_wav(wav_bytes)
    return bool(detect_speech(wav.as_float(), wav.sample_rate, cfg.min_speech_ms))


def scrub_audio(
    wav_bytes: bytes,
    transcript: Transcript | Sequence[Mapping[str, Any]] | None,
    cfg: AudioScrubConfig,
    detect: TextDetector,
    key: bytes,
) -> AudioResult:
    """Scrub one record's audio (WAV bytes) with its transcript (times relative to the
    audio's first sample): a :class:`Transcript`, the record column's word list
    (``[{"word", "t0_ns", "t1_ns"}]``), or None / [] when there is none. See the module
    docstring.

    Raises :class:`InputDataError` when the audio does not decode; exceptions from
    ``detect`` propagate.
    """
    if transcript is not None and not isinstance(transcript, Transcript):
        transcript = transcript_from_field(transcript)
    wav = read_wav(wav_bytes)
    n = wav.samples.shape[0]
    need_vad = transcript is None or not transcript.words or cfg.check_coverage
    speech = detect_speech(wav.as_float(), wav.sample_rate, cfg.min_speech_ms) if need_vad else []
    findings: list[Finding] = []
    out_spans: list[tuple[int, int] | None] = []
    flags: list[str] = []
    transcript_out = transcript
    ranges: list[tuple[int, int]] = []
    if transcript is not None and transcript.words:
        text, spans = transcript.joined()
        chosen = _non_overlapping(detect(text, transcript.language), len(text))
        hits = _map_to_words(chosen, spans, text, key)
        transcript_out, token_spans = _rewrite(transcript, text, spans, hits)
        pad = cfg.padding_ms * 1_000_000
        for hit, out_span in zip(hits, token_spans, strict=True):
            f = hit.finding
            hit_words = transcript.words[hit.first : hit.last + 1]
            t0, t1 = min(w.start_ns for w in hit_words), max(w.end_ns for w in hit_words)
            if f.operator == "keep":
                operator, i0, i1 = "keep", *_sample_range(t0, t1, 0, wav.sample_rate, n)
            else:
                operator = f"{cfg.mode}+{f.operator}"
                i0, i1 = _sample_range(t0, t1, pad, wav.sample_rate, n)
                ranges.append((i0, i1))
            findings.append(
                Finding(
                    modality="audio",
                    entity=f.entity,
                    score=f.score,
                    recognizer=f.recognizer,
                    operator=operator,
                    original_hash=keyed_hash(key, text[f.start or 0 : f.end or 0]),
                    start=f.start,
                    end=f.end,
                    t0_ns=i0 * _NS // wav.sample_rate,
                    t1_ns=-(-i1 * _NS // wav.sample_rate),
                    field="audio",
                    model=f.model,
                )
            )
            out_spans.append(out_span)
        unchecked = _uncovered(speech, transcript, cfg.min_speech_ms * 1_000_000)
    else:
        unchecked = speech
    if unchecked:
        flags.append(PII_UNCHECKED)
        findings.append(_unchecked_finding(unchecked, cfg))
        out_spans.append(None)
    out_bytes = write_wav(_apply(wav, ranges, cfg)) if ranges else wav_bytes
    return AudioResult(
        wav_bytes_out=out_bytes,
        transcript_out=transcript_out,
        findings=findings,
        flags=tuple(flags),
        out_spans=out_spans,
        speech=tuple(speech),
        drop=bool(unchecked) and cfg.untranscribed_speech == "drop",
    )

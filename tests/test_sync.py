"""Clock sync: onsets, flashes, GCC-PHAT, matching, fits, NTP logs, and the stage end to end
(a real recording through ingest and sync; the synthetic factory against its ground truth)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mmdata.config import FlashConfig, PipelineConfig, SyncConfig
from mmdata.demo import factory_pipeline
from mmdata.errors import StageError
from mmdata.ingest import run_ingest
from mmdata.rundir import RunDir
from mmdata.sync import (
    ClockEstimate,
    Prior,
    detect_flashes,
    detect_onsets,
    fit_line,
    fit_ntp,
    fractional_delay,
    gcc_phat,
    load_clock_models,
    match_events,
    parse_ntp_text,
    resolve_ntp_logs,
    run_sync,
    select_sync,
    synchronize,
)
from mmdata.sync.signals import frame_brightness
from mmdata.synth import SynthConfig, generate_factory
from mmdata.timebase import ClockModel

S = 1_000_000_000
MS = 1_000_000
T0 = 1_772_352_000 * S
SOUNDS = Path("/usr/share/sounds/freedesktop/stereo")


def knock(rate: float, amp: float = 0.6, ring_hz: float = 1700.0, tau_s: float = 0.004):
    """A tap: abrupt onset, then a ring decaying over ~25 ms."""
    t = np.arange(int(0.1 * rate)) / rate
    return amp * np.exp(-t / tau_s) * (0.6 + 0.4 * np.cos(2 * np.pi * ring_hz * t))


def place(x: np.ndarray, at: list[int], burst: np.ndarray) -> np.ndarray:
    for i in at:
        n = min(burst.size, x.shape[0] - i)
        x[i : i + n] += burst[:n] if x.ndim == 1 else burst[:n, None]
    return x


def sync_onsets(x: np.ndarray, rate: float) -> list[int]:
    """The onsets chosen as sync events, by sample index."""
    o = detect_onsets(x, rate)
    ts = (o.index * S / rate).astype(np.int64)
    return o.index[select_sync(ts, o.energy, 12.0, S)].tolist()


# --- onsets ------------------------------------------------------------------------------


def test_onsets_are_sample_exact_on_clean_impulses():
    rate = 16_000.0
    at = [12_345, 40_001, 70_007]
    silent = place(np.zeros(100_000), at, knock(rate))
    assert detect_onsets(silent, rate).index.tolist() == at
    # three axes at 5 kHz with gravity on z and a little sensor noise
    rng = np.random.default_rng(0)
    xyz = rng.normal(0, 0.002, (50_000, 3)) + np.array([0.0, 0.0, 1.0])
    place(xyz, [9_999, 31_234], knock(5000.0, amp=5.0, ring_hz=800.0))
    assert detect_onsets(xyz, 5000.0).index.tolist() == [9_999, 31_234]


def test_onsets_in_noise_and_hum_are_found_to_the_sample():
    rate = 16_000.0
    rng = np.random.default_rng(1)
    n = 20 * 16_000
    t = np.arange(n) / rate
    x = 0.1 * np.sin(2 * np.pi * 50 * t) + 0.03 * np.sin(2 * np.pi * 600 * t)
    x += rng.normal(0, 0.03, n)  # the taps peak 24 dB over the noise (and the hum)
    at = [20_000, 101_010, 250_003]
    place(x, at, knock(rate, amp=0.5))
    assert sync_onsets(x, rate) == at


def test_loud_machine_noise_without_an_onset_and_impact_trains_are_not_sync_events():
    rate = 16_000.0
    rng = np.random.default_rng(2)
    n = 30 * 16_000
    t = np.arange(n) / rate
    x = rng.normal(0, 0.01, n)
    # a machine runs up over 2 s to broadband noise twice as loud as the taps, then stops
    envelope = np.clip((t - 8.0) / 2.0, 0, 1) * np.clip((16.0 - t) / 2.0, 0, 1)
    x += envelope * rng.normal(0, 1.0, n)
    x += np.clip((t - 20.0) / 1.5, 0, 1) * 0.8 * np.sin(2 * np.pi * 120 * t)  # a loud hum
    # a rattle: weaker clicks every 60-140 ms between 3 s and 6 s
    clicks = (np.cumsum(rng.uniform(0.06, 0.14, 30)) + 3.0) * rate
    place(x, [int(c) for c in clicks if c < 6 * rate], knock(rate, amp=0.15, ring_hz=4500))
    at = [int(2.5 * rate) + 7, int(4.5 * rate) + 3, int(18 * rate) + 11, int(25 * rate) + 5]
    place(x, at, knock(rate, amp=0.5))
    assert sync_onsets(x, rate) == at  # including the tap in the middle of the rattle


def test_select_sync_keeps_isolated_strong_onsets():
    ts = np.array([0, 10, 20, 21, 22, 23, 40]) * S // 10
    energy = [100.0, 1.0, 50.0, 60.0, 55.0, 58.0, 90.0]  # a train at 2.0-2.3 s
    assert select_sync(ts, energy, 12.0, S).tolist() == [
        True,
        False,
        False,
        False,
        False,
        False,
        True,
    ]


# --- flashes -----------------------------------------------------------------------------


def _frame(rng: np.random.Generator, gain: float, occluded: bool) -> bytes:
    h, w = 120, 160
    img = np.full((h, w, 3), 90.0) + np.linspace(0, 40, w)[None, :, None]
    img[70:100, 20:140] = 60  # a conveyor
    if occluded:
        img[10:120, 50:110] = (40, 70, 130)  # an operator in blue stands in front
    img = np.clip(img * gain + rng.integers(-3, 4, (h, w, 1)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def test_flashes_are_found_between_the_last_dark_and_first_bright_frame(tmp_path):
    rng = np.random.default_rng(3)
    ts = T0 + np.arange(80, dtype=np.int64) * 500 * MS
    bright = []
    for i in range(80):
        gain = 1.45 if i in (10, 11, 12, 40, 41, 42, 0, 1) else 1.0
        gain *= 1.3 if i >= 60 else 1.0  # the hall lights go on for good
        data = _frame(rng, gain, occluded=25 <= i <= 28)
        path = tmp_path / f"f{i:03d}.jpg"
        path.write_bytes(data)
        bright.append(frame_brightness(None, str(path)))
        if i == 5:
            assert frame_brightness(data, None) == bright[-1]
    found = detect_flashes(ts, bright, FlashConfig())
    # the flash already on in the first frame has no onset; the lights are not a flash
    assert found.index.tolist() == [10, 40]
    assert found.dark_ns.tolist() == [ts[9], ts[39]]
    assert found.bright_ns.tolist() == [ts[10], ts[40]]
    assert np.isnan(frame_brightness(b"not a jpeg", None))


# --- cross-correlation -------------------------------------------------------------------


def _real_sound(name: str) -> tuple[np.ndarray, int]:
    path = SOUNDS / f"{name}.oga"
    if not path.exists():
        pytest.skip(f"{path} missing (Debian package sound-theme-freedesktop)")
    x, rate = sf.read(path, dtype="float64")
    return (x.mean(axis=1) if x.ndim > 1 else x), int(rate)


@pytest.mark.parametrize("name", ["camera-shutter", "complete", "bell"])
def test_gcc_phat_recovers_a_fractional_delay_of_a_real_recording(name):
    x, rate = _real_sound(name)
    rng = np.random.default_rng(4)
    pad = np.concatenate([np.zeros(rate // 10), x, np.zeros(rate // 10)])
    noise = 0.05 * np.std(x)  # independent noise on each channel, 26 dB below the sound
    a = pad + rng.normal(0, noise, pad.size)
    b = fractional_delay(pad, 3.37e-3 * rate) + rng.normal(0, noise, pad.size)
    got = gcc_phat(a, b, rate, max_delay_s=0.05)
    assert abs(got.delay_s - 3.37e-3) < 0.1e-3
    assert abs(gcc_phat(b, a, rate, max_delay_s=0.05).delay_s + 3.37e-3) < 0.1e-3


# --- matching and fitting ----------------------------------------------------------------


def test_matching_survives_missed_and_spurious_events_and_drift():
    rng = np.random.default_rng(5)
    ref = T0 + np.cumsum(rng.integers(45_000, 75_001, 12)) * MS
    dev_model = ClockEstimate(T0, 3_200 * MS, 150.0).invert()  # device = f(reference)
    dev = dev_model.apply(ref) + rng.integers(-100_000, 100_000, ref.size)
    keep = np.ones(ref.size, bool)
    keep[[3, 7]] = False  # the device missed two taps
    spurious = T0 + rng.integers(0, 700, 5) * S
    dev_all = np.concatenate([dev[keep], spurious])
    order = np.argsort(dev_all)
    m = match_events(dev_all[order], np.full(order.size, 200_000), ref, np.full(ref.size, 200_000),
                     max_offset_ns=10 * S, tolerance_ns=10 * MS, max_drift_ppm=200)  # fmt: skip
    true_dev_index = np.flatnonzero(order < keep.sum())
    assert m.device_index.tolist() == true_dev_index.tolist()
    assert m.reference_index.tolist() == np.flatnonzero(keep).tolist()
    fit = fit_line(dev_all[order][m.device_index], ref[m.reference_index],
                   np.full(len(m), 1e5), origin_ns=T0)  # fmt: skip
    assert abs(fit.estimate.drift_ppm - dev_model.invert().drift_ppm) < 0.5
    far = match_events(dev[keep], np.zeros(keep.sum()), ref + 20 * S, np.zeros(ref.size),
                       max_offset_ns=10 * S, tolerance_ns=10 * MS, max_drift_ppm=200)  # fmt: skip
    assert len(far) == 0  # 23 s apart: beyond max_offset


def test_fit_recovers_drift_drops_an_outlier_and_fits_offset_only_from_one_event():
    rng = np.random.default_rng(6)
    d = T0 + np.sort(rng.integers(0, 600, 10)) * S
    truth = ClockEstimate(T0, -1_234_567.0, 42.0)
    r = truth.apply(d) + rng.integers(-50_000, 50_000, d.size)
    r[4] += 3 * MS  # one wrong match
    fit = fit_line(d, r, np.full(d.size, 30_000.0), origin_ns=T0)
    assert fit.used.tolist() == [i != 4 for i in range(10)]
    assert abs(fit.estimate.offset_ns - truth.offset_ns) < 100_000
    assert abs(fit.estimate.drift_ppm - 42.0) < 0.5
    assert fit.drift_source == "data"
    one = fit_line(d[:1], r[:1], [30_000.0], origin_ns=int(d[0]), prior=Prior(7.0, 0.5, "ntp_log"))
    assert one.estimate.drift_ppm == pytest.approx(7.0)
    assert one.drift_source == "ntp_log"
    assert abs(one.estimate.offset_ns - (r[0] - d[0])) < 1.0


def test_clock_estimates_compose_invert_and_rebase_like_clock_models():
    rng = np.random.default_rng(7)
    for _ in range(20):
        a = ClockEstimate(T0, float(rng.integers(-2 * S, 2 * S)), float(rng.uniform(-100, 100)))
        b = ClockEstimate(T0 + 5 * S, float(rng.integers(-S, S)), float(rng.uniform(-100, 100)))
        t = T0 + rng.integers(0, 3600, 5) * S
        assert np.abs(a.then(b).apply(t) - b.apply(a.apply(t))).max() <= 2
        assert np.abs(a.invert().apply(a.apply(t)) - t).max() <= 2
        assert np.abs(a.rebase(T0 + 77 * S).apply(t) - a.apply(t)).max() <= 1
        assert np.abs(a.model().to_reference(t) - a.apply(t)).max() <= 1


# --- NTP logs ----------------------------------------------------------------------------


def test_ntp_lines_in_several_forms_and_garbage_is_counted():
    text = "\n".join([
        "2026-03-01T08:00:30.000000001Z ntp sync: device_ns=1772352030000000001 "
        "reference_ns=1772352031000000001 rtt_us=800",
        "2026-03-01T08:01:00Z chrony: offset_us=-1500 delay_ms=2",
        "ptp: local_ns=1772352090000000000, server_ns=1772352091000000000; rtt_ns=5000",
        "# a comment",
        "",
        "ntp sync: device_ns=17723 reference_ns=twelve rtt_us=800",
        "\x00\x01 binary junk",
        "device_ns=1 reference_ns=2 rtt_us=-5",
        "just a sentence",
    ])  # fmt: skip
    log = parse_ntp_text(text)
    assert log.device_ns.tolist() == [1772352030000000001, 1772352060000000000,
                                      1772352090000000000]  # fmt: skip
    assert (log.reference_ns - log.device_ns).tolist() == [S, -1_500_000, S]
    assert log.rtt_ns.tolist() == [800_000, 2_000_000, 5_000]
    assert (log.lines, log.garbage) == (7, 4)
    assert log.examples[0].startswith("ntp sync: device_ns=17723")


def test_ntp_fit_weights_pairs_by_round_trip():
    rng = np.random.default_rng(8)
    d = T0 + np.arange(40, dtype=np.int64) * 30 * S
    truth = ClockEstimate(T0, 5 * MS, 20.0)
    good = rng.random(40) < 0.6
    rtt = np.where(good, 200_000, 40 * MS)
    err = np.where(good, rng.integers(-80_000, 80_000, 40), 15 * MS)  # slow paths lag
    lines = "".join(f"device_ns={a} reference_ns={b} rtt_ns={c}\n"
                    for a, b, c in zip(d, truth.apply(d) + err, rtt, strict=True))  # fmt: skip
    weighted = fit_ntp(parse_ntp_text(lines), T0)
    flat = fit_ntp(parse_ntp_text(lines.replace("rtt_ns=", "x=")), T0)
    assert weighted is not None and flat is not None
    assert abs(weighted.estimate.offset_ns - 5 * MS) < 0.5 * MS
    assert abs(flat.estimate.offset_ns - 5 * MS) > 3 * MS  # equal weights are pulled off


# --- the stage on a real recording -------------------------------------------------------


def _stamp(ns: int) -> str:
    from mmdata.synth.clocks import file_stamp

    return file_stamp(ns)


def test_real_recording_through_ingest_and_sync_with_a_clock_jump(tmp_path):
    """One sound (a real recording) heard by two microphones; mic-b hears it 3.37 ms later
    (its clock agrees with mic-a's), and its clock jumps back 5 s between its two files."""
    x, rate = _real_sound("camera-shutter")
    rng = np.random.default_rng(9)
    n = 40 * rate
    starts = (np.cumsum(rng.uniform(4.0, 6.0, 7)) * rate).astype(int)
    clean = place(np.zeros(n), starts.tolist(), x)
    noise = 0.05 * np.std(x)
    a = clean + rng.normal(0, noise, n)
    b = fractional_delay(clean, 3.37e-3 * rate) + rng.normal(0, noise, n)
    split = 25 * rate
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sf.write(tmp_path / "a" / f"mic-a_{_stamp(T0)}.wav", a, rate, subtype="FLOAT")
    sf.write(tmp_path / "b" / f"mic-b_{_stamp(T0)}.wav", b[:split], rate, subtype="FLOAT")
    jumped = T0 + 20 * S  # the file starts 25 s in, but the clock now reads 5 s less
    sf.write(tmp_path / "b" / f"mic-b_{_stamp(jumped)}.wav", b[split:], rate, subtype="FLOAT")
    srcs = [{"connector": "audio", "path": str(tmp_path / d), "device": f"mic-{d}",
             "start": {"filename": f"mic-{d}_%Y%m%dT%H%M%S.%fZ"}} for d in "ab"]  # fmt: skip
    cfg = PipelineConfig.model_validate({"run_dir": str(tmp_path / "run"),
                                         "assets": {"bench": {"sources": srcs}}})  # fmt: skip
    with RunDir.open(tmp_path / "run") as run:
        run_ingest(run, cfg)
        outcome = run_sync(run, cfg)
        again = run_sync(run, cfg)
    assert (outcome.counts.in_, outcome.counts.out, outcome.counts.quarantined) == (2, 2, 0)
    assert again.skipped
    doc = json.loads((tmp_path / "run" / "sync" / "clock_models.json").read_text())
    mic_b = doc["devices"]["mic-b"]
    assert doc["reference"] == "mic-a" and mic_b["evidence"] == "events"
    assert mic_b["clock_jump"] and mic_b["segments"] == 2
    assert all(p["refined"] for p in mic_b["matched"])
    seg = {s["segment"]: s for s in mic_b["segment_models"]}
    assert abs(seg[0]["offset_ns"] + 3.37e6) < 0.1e6  # reference = device - 3.37 ms
    assert abs(seg[1]["offset_ns"] - (5 * S - 3.37e6)) < 0.1e6
    assert (
        load_clock_models(tmp_path / "run" / "sync" / "clock_models.json")["mic-b"].offset_ns
        == mic_b["offset_ns"]
    )


# --- the stage on the synthetic factory --------------------------------------------------


@pytest.fixture(scope="module")
def factory_run(tmp_path_factory):
    """3 assets x 3 minutes, ingested; the sync config reads the NTP logs."""
    root = tmp_path_factory.mktemp("sync-factory")
    factory = root / "factory"
    generate_factory(SynthConfig(assets=3, minutes=3, seed=0, workers=2, image_width=160,
                                 image_height=120), factory)  # fmt: skip
    base = factory_pipeline(factory, root / "run").model_dump(mode="json")
    base["sync"] = {"ntp_logs": {"*": str(factory / "*/clock/ntp-{device}.log")},
                    "plant_clock": "mes-line"}  # fmt: skip
    cfg = PipelineConfig.model_validate(base)
    with RunDir.open(root / "run") as run:
        run_ingest(run, cfg)
    truth = json.loads((factory / "ground_truth.json").read_text())
    return factory, root / "run", cfg, truth


def _truth_vs(truth: dict, dev: str, ref: str, origin: int) -> ClockEstimate:
    def plant(d: str) -> ClockEstimate:
        v = truth["devices"][d]
        return ClockEstimate(v["origin_ns"], float(v["offset_ns"]), float(v["drift_ppm"]))

    return plant(dev).then(plant(ref).invert()).rebase(origin)


def _errors(doc: dict, truth: dict) -> dict[str, tuple[float, float]]:
    out = {}
    for dev, d in doc["devices"].items():
        t = _truth_vs(truth, dev, doc["reference"], d["origin_ns"])
        out[dev] = (d["offset_ns"] - t.offset_ns, d["drift_ppm"] - t.drift_ppm)
    return out


def test_factory_clock_models_match_ground_truth(factory_run):
    factory, run_dir, cfg, truth = factory_run
    with RunDir.open(run_dir) as run:
        outcome = run_sync(run, cfg)
        assert run_sync(run, cfg).skipped
        log = factory / "press-2" / "clock" / "ntp-cam-press-2.log"
        log.write_text(log.read_text() + "garbage line\n")
        assert not run_sync(run, cfg).skipped  # the NTP logs are inputs
    assert (outcome.counts.in_, outcome.counts.out) == (10, 10)
    doc = json.loads((run_dir / "sync" / "clock_models.json").read_text())
    assert doc["schema_version"] == "mmdata.clock_models/1"
    assert doc["reference"] == "acc-press-1" and doc["event_anchor"] == "acc-press-1"
    assert doc["ntp_logs"]["cam-press-2"]["garbage"] == 1
    errors = _errors(doc, truth)
    for dev, (off, drift) in errors.items():
        d = doc["devices"][dev]
        kind = truth["devices"][dev]["kind"]
        assert abs(off) < 1 * MS, (dev, off)
        assert abs(drift) < 5.0, (dev, drift)
        assert abs(off) <= d["error_bound_ns"], (dev, off, d["error_bound_ns"])
        assert not d["clock_uncertain"] and not d["exceeds_tolerance"]
        if kind in ("accelerometer", "microphone") and dev != "acc-press-1":
            assert d["evidence"] == "events" and d["n_used"] == 3
        if kind == "camera":
            # A 2 fps camera's flashes place it within a frame (250 ms); its NTP log does
            # better, and the tightest bound wins.
            assert d["evidence"] == "ntp_log"
            assert d["alternatives"]["events"]["error_bound_ns"] > 100 * d["error_bound_ns"]
    assert doc["devices"]["mes-line"]["evidence"] == "ntp_log"
    # Evidence in order instead: the cameras keep their flashes, and are flagged for it.
    first = synchronize(run_dir / "ingest", cfg.sync.model_copy(update={"choose": "first"}),
                        cfg.devices(), resolve_ntp_logs(cfg.sync, cfg.devices()))  # fmt: skip
    for dev, d in first["devices"].items():
        if truth["devices"][dev]["kind"] == "camera":
            assert d["evidence"] == "events" and d["drift_evidence"] == "ntp_log"
            assert d["exceeds_tolerance"]  # 2 fps cannot sync to 5 ms, and it says so
            assert abs(_errors(first, truth)[dev][0]) < 500 * MS
    # A tolerance per device (glob): the cameras are judged against their own.
    sync = cfg.sync.model_copy(update={"device_tolerance_ms": {"cam-*": 1000}, "choose": "first"})
    with RunDir.open(run_dir) as run:
        run_sync(run, cfg.model_copy(update={"sync": sync}))
    per_device = json.loads((run_dir / "sync" / "clock_models.json").read_text())["devices"]
    for dev, d in per_device.items():
        if truth["devices"][dev]["kind"] == "camera":
            assert d["error_bound_ns"] < 1000 * MS and not d["exceeds_tolerance"], dev
        else:
            assert d["exceeds_tolerance"] == first["devices"][dev]["exceeds_tolerance"], dev
    with RunDir.open(run_dir) as run:
        run_sync(run, cfg)
    models = load_clock_models(run_dir / "sync" / "clock_models.json")
    assert isinstance(models["mic-press-2"], ClockModel)


def test_factory_without_ntp_logs_flags_what_events_cannot_reach(factory_run):
    _, run_dir, cfg, truth = factory_run
    devices = cfg.devices()
    sync = SyncConfig()
    doc = synchronize(run_dir / "ingest", sync, devices, {})
    mes = doc["devices"]["mes-line"]
    assert mes["clock_uncertain"] and mes["offset_ns"] == 0 and mes["evidence"] == "none"
    assert "no sync events found" in mes["reasons"][0]
    errors = _errors(doc, truth)
    for dev in ("mic-press-1", "acc-press-3", "mic-press-3"):
        assert abs(errors[dev][0]) < 1 * MS and abs(errors[dev][1]) < 5.0
    cam = doc["devices"]["cam-press-1"]
    assert cam["drift_evidence"] == "prior" and abs(errors["cam-press-1"][0]) < 500 * MS


def test_factory_with_the_plant_clock_as_reference_composes_through_ntp(factory_run):
    _, run_dir, cfg, truth = factory_run
    sync = cfg.sync.model_copy(update={"reference": "mes-line"})
    doc = synchronize(
        run_dir / "ingest", sync, cfg.devices(), resolve_ntp_logs(sync, cfg.devices())
    )
    anchor = doc["event_anchor"]  # the plant clock saw no taps: a device stands in for it
    assert doc["reference"] == "mes-line" and truth["devices"][anchor]["kind"] != "camera"
    errors = _errors(doc, truth)
    for dev, d in doc["devices"].items():
        assert abs(errors[dev][0]) < 1 * MS and abs(errors[dev][0]) <= d["error_bound_ns"]
        # composing through the stand-in adds its NTP error: each device gets the tighter
        bounds = [a["error_bound_ns"] for a in d["alternatives"].values()]
        assert all(d["error_bound_ns"] <= b for b in bounds if b is not None), dev
    first = synchronize(run_dir / "ingest", sync.model_copy(update={"choose": "first"}),
                        cfg.devices(), resolve_ntp_logs(sync, cfg.devices()))  # fmt: skip
    for dev in ("acc-press-1", "mic-press-2", "acc-press-3"):
        d = first["devices"][dev]
        assert d["via"] == anchor if dev != anchor else d["evidence"] == "ntp_log"


def test_configured_constants_and_evidence_order(factory_run):
    _, run_dir, cfg, _ = factory_run
    sync = SyncConfig(evidence=["config"], constants={"mic-press-1": {"offset_ms": 25}})
    doc = synchronize(run_dir / "ingest", sync, cfg.devices(), {})
    mic = doc["devices"]["mic-press-1"]
    assert mic["evidence"] == "config" and mic["offset_ns"] == 25 * MS
    assert mic["error_bound_ns"] is None and not mic["clock_uncertain"]
    other = doc["devices"]["acc-press-2"]
    assert other["clock_uncertain"] and "no configured constant" in other["reasons"][0]
    assert doc["streams"] == {}  # events were not asked for: nothing was scanned


def test_sync_needs_a_completed_ingest(tmp_path):
    notes = {"connector": "notes", "path": str(tmp_path / "n.jsonl")}
    cfg = PipelineConfig.model_validate(
        {"run_dir": str(tmp_path / "r"), "assets": {"a": {"sources": [notes]}}}
    )
    with RunDir.open(tmp_path / "r") as run, pytest.raises(StageError, match="ingest"):
        run_sync(run, cfg)


def test_flashes_in_a_video_camera(tmp_path):
    """The factory's MP4 camera (video connector: frames stay in the file) flashes too."""
    factory = tmp_path / "factory"
    generate_factory(SynthConfig(assets=1, minutes=2, camera="mp4", workers=1, image_width=160,
                                 image_height=120), factory)  # fmt: skip
    cfg = factory_pipeline(factory, tmp_path / "run")
    sync = cfg.sync.model_copy(update={"choose": "first"})  # the flashes, not the NTP log
    cfg = cfg.model_copy(update={"sync": sync})
    with RunDir.open(tmp_path / "run") as run:
        run_ingest(run, cfg)
        run_sync(run, cfg)
    doc = json.loads((tmp_path / "run" / "sync" / "clock_models.json").read_text())
    truth = json.loads((factory / "ground_truth.json").read_text())
    assert doc["streams"]["press-1.cam-press-1.frames"]["modality"] == "video"
    cam = doc["devices"]["cam-press-1"]
    assert cam["evidence"] == "events" and cam["n_used"] == len(truth["sync_events"])
    assert abs(_errors(doc, truth)["cam-press-1"][0]) < 500 * MS

"""Specification of the synthetic factory (``mmdata synth``).

The factory must write what the devices of an inspection line would write -- each device on
its own drifting clock -- and a ground truth that lets every later stage be checked: the clock
models, the sync events, the faults (each visible in exactly one modality) and the PII.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pydantic
import pytest
import soundfile as sf
from PIL import Image

from mmdata.errors import UsageError
from mmdata.synth import (
    SCHEMA_VERSION,
    SynthConfig,
    generate_factory,
    is_valid_my_number,
    my_number_check_digit,
)
from mmdata.synth.notes import generate_notes
from mmdata.synth.plan import build_plan
from mmdata.timebase import NS_PER_MS, NS_PER_S, ClockModel, datetime_to_ns

# Two assets x 5 minutes: long enough for every fault class, ~5 sync events and notes,
# short enough to generate in a few seconds. press-1 writes Parquet, press-2 CSV.
SMALL = SynthConfig(assets=2, minutes=5, seed=3, workers=2)
STAMP = r"\d{8}T\d{6}\.\d{3}Z"
FAULT_CLASSES = ("surface_scratch", "bearing_wear", "loose_part_rattle")


# -- helpers ------------------------------------------------------------------------------


def sha256_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def clock(gt: dict[str, Any], device: str) -> ClockModel:
    d = gt["devices"][device]
    return ClockModel(offset_ns=d["offset_ns"], drift_ppm=d["drift_ppm"], origin_ns=d["origin_ns"])


def stamp_ns(stamp: str) -> int:
    """'20260301T080000.500Z' -> int ns."""
    d = dt.datetime.strptime(stamp[:15], "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
    return datetime_to_ns(d) + int(stamp[16:19]) * NS_PER_MS


def read_accel(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
    ts = table.column("ts_ns").to_numpy()
    xyz = np.stack([table.column(c).to_numpy() for c in ("ax", "ay", "az")], axis=1)
    return ts, xyz


def device_series(root: Path, gt: dict[str, Any], device: str) -> tuple[np.ndarray, np.ndarray]:
    """All samples of a sensor: (device ts_ns, values) concatenated over its files."""
    ts_parts, val_parts = [], []
    for f in gt["devices"][device]["files"]:
        path = root / f["path"]
        if path.suffix == ".wav":
            data, _ = sf.read(path, dtype="float64")
            ts = (
                f["first_ts_ns"]
                + (np.arange(data.size, dtype=np.int64) * NS_PER_S)
                // gt["devices"][device]["nominal_rate_hz"]
            )
            ts_parts.append(ts)
            val_parts.append(data)
        else:
            ts, xyz = read_accel(path)
            ts_parts.append(ts)
            val_parts.append(xyz)
    return np.concatenate(ts_parts), np.concatenate(val_parts)


def entry_stamp_iso(ns: int) -> str:
    """MP4 creation_time as PyAV reads it back: '2026-03-01T08:00:00.000000Z'."""
    return dt.datetime.fromtimestamp(ns // NS_PER_S, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def onsets(ts: np.ndarray, level: np.ndarray, threshold: float) -> list[int]:
    """Device times of the first sample of each burst above ``threshold`` (bursts >1 s apart)."""
    idx = np.flatnonzero(level > threshold)
    if idx.size == 0:
        return []
    starts = [idx[0]] + [b for a, b in itertools.pairwise(idx) if ts[b] - ts[a] > NS_PER_S]
    return [int(ts[i]) for i in starts]


def window_labels(gt: dict[str, Any], asset: str, ref_lo: int, ref_hi: int) -> str | None:
    """Label of a reference window: a fault class if inside one, 'normal' if clear of all
    faults by 0.5 s, None when mixed or near a sync event."""
    for ev in gt["sync_events"]:
        if ref_lo - NS_PER_S // 2 < ev["reference_ns"] < ref_hi + NS_PER_S // 10:
            return None
    margin = NS_PER_S // 2
    for f in gt["faults"][asset]:
        if f["start_ns"] <= ref_lo and ref_hi <= f["end_ns"]:
            return str(f["class"])
        if ref_lo < f["end_ns"] + margin and f["start_ns"] - margin < ref_hi:
            return None
    return "normal"


def windowed(
    gt: dict[str, Any], asset: str, device: str, ts: np.ndarray, rate: int
) -> list[tuple[str, slice]]:
    """1-second windows of a sensor with a clean label."""
    model = clock(gt, device)
    out = []
    for lo in range(0, ts.size - rate, rate):
        hi = lo + rate
        label = window_labels(
            gt,
            asset,
            int(model.to_reference(int(ts[lo]))),
            int(model.to_reference(int(ts[hi - 1]))),
        )
        if label is not None:
            out.append((label, slice(lo, hi)))
    return out


def median_by_label(pairs: list[tuple[str, float]]) -> dict[str, float]:
    labels = {label for label, _ in pairs}
    return {lab: float(np.median([v for la, v in pairs if la == lab])) for lab in labels}


def frame_refs(gt: dict[str, Any], device: str) -> list[tuple[str, int, int]]:
    model = clock(gt, device)
    return [
        (f["path"], f["first_ts_ns"], int(model.to_reference(f["first_ts_ns"])))
        for f in gt["devices"][device]["files"]
    ]


def in_flash(gt: dict[str, Any], ref: int) -> bool:
    return any(0 <= ref - e["reference_ns"] < 1_500 * NS_PER_MS for e in gt["sync_events"])


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("small") / "factory"
    calls: list[tuple[str, int, int]] = []
    summary = generate_factory(SMALL, root, progress=lambda t, d, n: calls.append((t, d, n)))
    gt = json.loads((root / "ground_truth.json").read_text(encoding="utf-8"))
    # preconditions this module relies on
    classes = {f["class"] for faults in gt["faults"].values() for f in faults}
    assert classes == set(FAULT_CLASSES)
    assert len(gt["sync_events"]) >= 3
    assert summary.assets == ["press-1", "press-2"]
    assert [d for _, d, _ in calls] == list(range(1, len(calls) + 1))
    assert calls[-1][1] == calls[-1][2]
    return root, gt


# -- config -------------------------------------------------------------------------------------


def test_config_rejects_naive_start_unknown_fields_and_odd_sizes() -> None:
    with pytest.raises(pydantic.ValidationError, match="timezone-aware"):
        SynthConfig(start=dt.datetime(2026, 3, 1, 8))
    with pytest.raises(pydantic.ValidationError):
        SynthConfig(asset=3)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError, match="even"):
        SynthConfig(image_width=321)
    with pytest.raises(pydantic.ValidationError, match="sync_interval_s"):
        SynthConfig(sync_interval_s=(60, 30))
    with pytest.raises(pydantic.ValidationError):
        SynthConfig(assets=0)
    jst = dt.timezone(dt.timedelta(hours=9))
    cfg = SynthConfig(start=dt.datetime(2026, 3, 1, 17, tzinfo=jst))
    assert cfg.start == dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC)
    assert all(f.description for f in SynthConfig.model_fields.values())


# -- layout -------------------------------------------------------------------------------------


def test_layout_file_names_and_ground_truth(small: tuple[Path, dict[str, Any]]) -> None:
    root, gt = small
    assert gt["schema_version"] == SCHEMA_VERSION
    assert gt["origin_ns"] == gt["start_ns"] == SMALL.start_ns()
    assert gt["end_ns"] - gt["start_ns"] == 5 * 60 * NS_PER_S
    assert "(1 + drift_ppm * 1e-6)" in gt["clock_model"]
    assert (root / "README.md").read_text(encoding="utf-8").count(gt["clock_model"]) == 1
    assert (root / "notes" / "operator_notes.jsonl").is_file()
    expected_dirs = {"cam", "vib", "mic", "clock"}
    for asset in ("press-1", "press-2"):
        assert {p.name for p in (root / asset).iterdir()} == expected_dirs
        for kind, sub, ext in (("cam", "cam", "jpg"), ("acc", "vib", None), ("mic", "mic", "wav")):
            device = f"{kind}-{asset}"
            ext = ext or ("parquet" if asset == "press-1" else "csv")
            names = sorted(p.name for p in (root / asset / sub).iterdir())
            assert names, device
            for name in names:
                m = re.fullmatch(rf"{device}_({STAMP})\.{ext}", name)
                assert m, name
            entries = gt["devices"][device]["files"]
            assert sorted(Path(e["path"]).name for e in entries) == names
            for e in entries:  # the name carries the first sample's device time (ms)
                stamp = re.search(STAMP, e["path"]).group(0)  # type: ignore[union-attr]
                assert stamp_ns(stamp) == e["first_ts_ns"] // NS_PER_MS * NS_PER_MS
        logs = sorted(p.name for p in (root / asset / "clock").iterdir())
        assert logs == sorted(f"ntp-{k}-{asset}.log" for k in ("acc", "cam", "mic"))
    dev = gt["devices"]["acc-press-1"]
    assert dev["kind"] == "accelerometer"
    assert dev["nominal_rate_hz"] == 5000
    assert gt["devices"]["mes-line"]["offset_ns"] == 0
    assert abs(dev["offset_ns"]) <= 2000 * NS_PER_MS
    assert abs(dev["drift_ppm"]) <= 100
    # every device covers the whole reference span
    for name, d in gt["devices"].items():
        if name == "mes-line":
            continue
        model = clock(gt, name)
        period = NS_PER_S / d["nominal_rate_hz"]
        assert model.to_reference(d["files"][0]["first_ts_ns"]) <= gt["start_ns"]
        assert model.to_reference(d["files"][-1]["last_ts_ns"]) >= gt["end_ns"] - period


def test_progress_reports_run_in_order_in_the_parent(tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    generate_factory(
        SynthConfig(assets=1, minutes=0.3, workers=2),
        tmp_path / "f",
        progress=lambda t, d, n: seen.append((t, d, n)),
    )
    totals = {n for _, _, n in seen}
    assert len(totals) == 1
    assert [d for _, d, _ in seen] == list(range(1, totals.pop() + 1))
    assert any("camera" in t for t, _, _ in seen)


def test_refuses_non_empty_output_dir_unless_overwriting_its_own(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    cfg = SynthConfig(assets=1, minutes=0.1, workers=1)
    with pytest.raises(UsageError, match="not empty"):
        generate_factory(cfg, foreign, overwrite=True)
    assert (foreign / "keep.txt").exists()
    out = tmp_path / "out"
    generate_factory(cfg, out)
    with pytest.raises(UsageError, match="not empty"):
        generate_factory(cfg, out)
    generate_factory(cfg.model_copy(update={"seed": 5}), out, overwrite=True)
    assert json.loads((out / "ground_truth.json").read_text())["config"]["seed"] == 5


# -- determinism ------------------------------------------------------------------------------


def test_same_config_gives_identical_bytes_whatever_the_worker_count(
    small: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, _ = small
    again = tmp_path / "again"
    generate_factory(SMALL.model_copy(update={"workers": 1}), again)
    assert sha256_tree(again) == sha256_tree(root)


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    cfg = SynthConfig(assets=1, minutes=0.3, workers=1)
    generate_factory(cfg, tmp_path / "a")
    generate_factory(cfg.model_copy(update={"seed": 1}), tmp_path / "b")
    a, b = sha256_tree(tmp_path / "a"), sha256_tree(tmp_path / "b")
    assert a["ground_truth.json"] != b["ground_truth.json"]
    shared = set(a) & set(b)
    assert all(a[k] != b[k] for k in shared if k.endswith((".wav", ".parquet", ".jpg")))


# -- clocks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["acc", "mic"])
def test_tap_onsets_map_to_the_sync_events_within_1ms(
    small: tuple[Path, dict[str, Any]], kind: str
) -> None:
    root, gt = small
    events = np.array([e["reference_ns"] for e in gt["sync_events"]])
    for asset in ("press-1", "press-2"):
        device = f"{kind}-{asset}"
        ts, values = device_series(root, gt, device)
        if kind == "acc":
            level = np.abs(values - np.median(values, axis=0)).max(axis=1)
            found = onsets(ts, level, 2.0)  # g; normal + bearing stay below ~1.5 g
        else:
            found = onsets(ts, np.abs(values), 0.5)  # full scale; rattle stays below 0.45
        model = clock(gt, device)
        refs = np.array([model.to_reference(t) for t in found])
        assert refs.size == events.size, device
        errors = refs - events
        assert np.all(np.abs(errors) < NS_PER_MS), (device, errors)
        # the device clocks really are off: ignoring the model would miss by far more
        raw_errors = np.array(found) - events
        assert np.max(np.abs(raw_errors)) > 5 * NS_PER_MS or gt["devices"][device]["offset_ns"] == 0


def test_first_bright_frame_follows_each_flash_within_one_frame(
    small: tuple[Path, dict[str, Any]],
) -> None:
    root, gt = small
    period = NS_PER_S / SMALL.camera_fps
    for asset in ("press-1", "press-2"):
        frames = frame_refs(gt, f"cam-{asset}")
        means = np.array([np.asarray(Image.open(root / p)).mean() for p, _, _ in frames])
        bright = means > 1.2 * np.median(means)
        refs = np.array([r for _, _, r in frames])
        for ev in gt["sync_events"]:
            t = ev["reference_ns"]
            first = int(np.searchsorted(refs, t))  # first frame at/after the event
            assert bright[first], (asset, t)
            assert not bright[first - 1], (asset, t)
            assert 0 <= refs[first] - t < period
            assert bright[first + 1]  # the flash lasts 1.5 s: >= 2 bright frames at 2 fps
        expected = np.array([in_flash(gt, int(r)) for r in refs])
        assert np.array_equal(bright, expected)


def test_ntp_logs_are_parseable_and_close_to_the_true_clock(
    small: tuple[Path, dict[str, Any]],
) -> None:
    root, gt = small
    line_re = re.compile(
        r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9})Z ntp sync: device_ns=(\d+) "
        r"reference_ns=(\d+) rtt_us=(\d+)"
    )
    for device, d in gt["devices"].items():
        if device == "mes-line":
            continue
        lines = (root / d["ntp_log"]).read_text(encoding="utf-8").splitlines()
        assert len(lines) >= 9  # 5 minutes, one line every ~30 s
        model = clock(gt, device)
        prev = None
        for line in lines:
            m = line_re.fullmatch(line)
            assert m, line
            dev_ns, ref_ns, rtt = int(m[2]), int(m[3]), int(m[4])
            iso = dt.datetime.fromisoformat(m[1][:26] + "+00:00")
            assert datetime_to_ns(iso) == dev_ns // 1000 * 1000
            error = ref_ns - model.to_reference(dev_ns)
            assert abs(error) <= rtt * 1000 / 2
            if prev is not None:
                assert 29 * NS_PER_S < dev_ns - prev < 31 * NS_PER_S
            prev = dev_ns


# -- files ---------------------------------------------------------------------------------------


def test_jpeg_exif_round_trips_device_time_in_plant_time(
    small: tuple[Path, dict[str, Any]],
) -> None:
    root, gt = small
    jst = dt.timezone(dt.timedelta(hours=9))
    for f in gt["devices"]["cam-press-2"]["files"][:5]:
        img = Image.open(root / f["path"])
        assert img.size == (320, 240)
        assert img.format == "JPEG"
        exif = img.getexif()
        assert exif[0x010F] == "InspectCam"
        assert exif[0x0110] == "IC-320"
        sub = exif.get_ifd(0x8769)
        assert sub[0x9011] == "+09:00"
        local = dt.datetime.strptime(sub[0x9003], "%Y:%m:%d %H:%M:%S").replace(tzinfo=jst)
        ns = datetime_to_ns(local) + int(sub[0x9291]) * NS_PER_MS
        assert ns == f["first_ts_ns"] // NS_PER_MS * NS_PER_MS
    frames = gt["devices"]["cam-press-2"]["files"]
    assert all(
        b["first_ts_ns"] - a["first_ts_ns"] == 500 * NS_PER_MS
        for a, b in itertools.pairwise(frames)
    )


def test_accelerometer_files_parquet_and_csv(small: tuple[Path, dict[str, Any]]) -> None:
    root, gt = small
    for device, ext in (("acc-press-1", ".parquet"), ("acc-press-2", ".csv")):
        files = gt["devices"][device]["files"]
        for i, f in enumerate(files):
            path = root / f["path"]
            assert path.suffix == ext
            if ext == ".parquet":
                schema = pq.read_schema(path)
                assert [str(schema.field(c).type) for c in ("ts_ns", "ax", "ay", "az")] == [
                    "int64",
                    "float",
                    "float",
                    "float",
                ]
            else:
                assert path.read_text().split("\n", 1)[0] == "ts_ns,ax,ay,az"
            ts, xyz = read_accel(path)
            assert ts.dtype == np.int64
            assert ts.size == f["samples"]
            assert ts[0] == f["first_ts_ns"]
            assert ts[-1] == f["last_ts_ns"]
            assert set(np.diff(ts).tolist()) == {200_000}  # 5 kHz on the device clock, exact
            if i < len(files) - 1:
                assert ts.size == 60 * 5000
                assert files[i + 1]["first_ts_ns"] - ts[0] == 60 * NS_PER_S
            assert abs(float(np.median(xyz[:, 2])) - 1.0) < 0.05  # gravity on z, in g


def test_wav_files_are_16bit_mono_at_the_nominal_rate(small: tuple[Path, dict[str, Any]]) -> None:
    root, gt = small
    files = gt["devices"]["mic-press-1"]["files"]
    for i, f in enumerate(files):
        info = sf.info(root / f["path"])
        assert (info.samplerate, info.channels, info.subtype, info.format) == (
            16000,
            1,
            "PCM_16",
            "WAV",
        )
        assert info.frames == f["samples"]
        if i < len(files) - 1:
            assert info.frames == 60 * 16000
    data, _ = sf.read(root / files[0]["path"], dtype="float64")
    assert 0.02 < float(np.std(data)) < 0.2
    assert np.max(np.abs(data)) < 1.0


# -- faults: each visible in exactly one modality ---------------------------------------------


def bpfo_prominence(x: np.ndarray, rate: int, bpfo: float, resonance: float) -> float:
    """Envelope-spectrum level at BPFO and 2 harmonics over the 20-500 Hz median."""
    spec = np.fft.rfft(x - x.mean())
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    spec[np.abs(freqs - resonance) > 500] = 0
    analytic = np.fft.irfft(spec, n=x.size) + 1j * np.fft.irfft(-1j * spec, n=x.size)
    env = np.abs(analytic)
    es = np.abs(np.fft.rfft(env - env.mean()))
    ef = np.fft.rfftfreq(env.size, 1 / rate)
    peaks = [es[np.abs(ef - k * bpfo) <= 1.5].max() for k in (1, 2, 3)]
    return float(np.mean(peaks) / (np.median(es[(ef > 20) & (ef < 500)]) + 1e-12))


def band_power(x: np.ndarray, rate: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum() / x.size)


def test_bearing_wear_shows_only_in_vibration(small: tuple[Path, dict[str, Any]]) -> None:
    root, gt = small
    for a in gt["assets"]:
        asset = a["asset"]
        ts, xyz = device_series(root, gt, f"acc-{asset}")
        wins = windowed(gt, asset, f"acc-{asset}", ts, 5000)
        levels = median_by_label(
            [
                (lab, bpfo_prominence(xyz[s, 0], 5000, a["bpfo_hz"], a["resonance_hz"]))
                for lab, s in wins
            ]
        )
        if "bearing_wear" in levels:
            assert levels["bearing_wear"] > 5 * levels["normal"], levels
        for other in ("surface_scratch", "loose_part_rattle"):
            if other in levels:
                assert levels[other] < 2 * levels["normal"], levels


def test_rattle_shows_only_in_audio(small: tuple[Path, dict[str, Any]]) -> None:
    root, gt = small
    for a in gt["assets"]:
        asset = a["asset"]
        ts, x = device_series(root, gt, f"mic-{asset}")
        wins = windowed(gt, asset, f"mic-{asset}", ts, 16000)
        power = median_by_label([(lab, band_power(x[s], 16000, 3000, 6000)) for lab, s in wins])
        if "loose_part_rattle" in power:
            assert power["loose_part_rattle"] > 3 * power["normal"], power
        for other in ("surface_scratch", "bearing_wear"):
            if other in power:
                assert power[other] < 1.5 * power["normal"], power


def dark_belt_pixels(path: Path) -> int:
    arr = np.asarray(Image.open(path).convert("L"), dtype=np.int16)
    h = arr.shape[0]
    belt = arr[int(0.56 * h) + 2 : int(0.80 * h) - 2]
    return int((belt < 40).sum())


def test_scratches_show_only_in_images(small: tuple[Path, dict[str, Any]]) -> None:
    root, gt = small
    tagged = {t["file"] for t in gt["image_pii"]}
    counts: dict[str, list[int]] = {c: [] for c in ("normal", *FAULT_CLASSES)}
    for asset in ("press-1", "press-2"):
        for path, _, ref in frame_refs(gt, f"cam-{asset}"):
            if path in tagged or in_flash(gt, ref):
                continue
            label = "normal"
            for f in gt["faults"][asset]:
                if f["start_ns"] <= ref < f["end_ns"]:
                    label = f["class"]
            counts[label].append(dark_belt_pixels(root / path))
    assert min(counts["surface_scratch"]) > 60
    for label in ("normal", "bearing_wear", "loose_part_rattle"):
        assert counts[label], label
        assert max(counts[label]) < 15, label


def test_fault_schedule_is_balanced_and_well_separated() -> None:
    plan = build_plan(SynthConfig())  # the default 3 assets x 10 minutes (no files written)
    span = plan.end_ns - plan.start_ns
    fractions, totals = [], dict.fromkeys(FAULT_CLASSES, 0)
    for asset in plan.assets:
        faults = asset.faults
        for f in faults:
            assert 20 * NS_PER_S <= f.end_ns - f.start_ns <= 60 * NS_PER_S
            assert plan.start_ns <= f.start_ns
            assert f.end_ns <= plan.end_ns
            totals[f.fault_class] += f.end_ns - f.start_ns
        for prev, nxt in itertools.pairwise(faults):
            assert nxt.start_ns - prev.end_ns >= 10 * NS_PER_S
        fractions.append(sum(f.end_ns - f.start_ns for f in faults) / span)
    assert 0.35 <= float(np.mean(fractions)) <= 0.55, fractions
    assert min(totals.values()) > 0.5 * max(totals.values()), totals


# -- PII ground truth ---------------------------------------------------------------------------


def test_note_spans_match_text_and_pii_is_realistic(small: tuple[Path, dict[str, Any]]) -> None:
    root, gt = small
    lines = (root / "notes" / "operator_notes.jsonl").read_text(encoding="utf-8").splitlines()
    notes = [json.loads(line) for line in lines]
    assert len(notes) == len(gt["notes"]) >= 2 * 5 * 60 // 40
    by_id = {t["note_id"]: t for t in gt["notes"]}
    for note in notes:
        assert set(note) == {"note_id", "ts", "asset", "kind", "lang", "author", "text"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+09:00", note["ts"])
        assert (
            datetime_to_ns(dt.datetime.fromisoformat(note["ts"]))
            == by_id[note["note_id"]]["reference_ns"]
        )
        assert re.fullmatch(r"EMP-\d{6}", note["author"])
        truth = by_id[note["note_id"]]
        for item in truth["spans"] + truth["decoys"]:
            assert note["text"][item["start"] : item["end"]] == item["text"]
    # a larger, notes-only sample (cheap) to check the mix and the rare entities
    many, truth = generate_notes(SynthConfig(assets=3, minutes=120))
    langs = [n["lang"] for n in many]
    assert 0.4 < langs.count("ja") / len(langs) < 0.6
    spans = [s for t in truth for s in t["spans"]]
    entities = {s["entity"] for s in spans}
    assert entities == {
        "PERSON",
        "EMAIL_ADDRESS",
        "PHONE_NUMBER",
        "EMPLOYEE_ID",
        "BADGE_ID",
        "JP_POSTAL_CODE",
        "JP_MY_NUMBER",
    }
    assert {d["kind"] for t in truth for d in t["decoys"]} == {
        "machine",
        "serial",
        "firmware",
        "part_number",
        "lot",
    }
    for s in spans:
        if s["entity"] == "JP_MY_NUMBER":
            assert is_valid_my_number(s["text"]), s
        if s["entity"] == "EMPLOYEE_ID":
            assert re.fullmatch(r"EMP-\d{6}", s["text"])
        if s["entity"] == "BADGE_ID":
            assert re.fullmatch(r"B\d{5}", s["text"])
        if s["entity"] == "JP_POSTAL_CODE":
            assert re.fullmatch(r"〒\d{3}-\d{4}", s["text"])
    lots = [d["text"] for t in truth for d in t["decoys"] if d["kind"] == "lot"]
    assert any(re.fullmatch(r"\d{12}", x) and not is_valid_my_number(x) for x in lots)
    # PII glued to Japanese text, e.g. 田中さん(tanaka.t@example-plant.co.jp)に連絡
    glued = [
        (n, s)
        for n, t in zip(many, truth, strict=True)
        for s in t["spans"]
        if n["lang"] == "ja"
        and s["start"] > 0
        and s["end"] < len(n["text"])
        and not n["text"][s["start"] - 1].isspace()
        and not n["text"][s["end"]].isspace()
    ]
    assert any(s["entity"] == "EMAIL_ADDRESS" for _, s in glued)
    assert any(s["entity"] == "PHONE_NUMBER" for _, s in glued)
    # notes never give the fault away
    text = " ".join(n["text"] for n in many).lower()
    for word in ("scratch", "bearing", "rattle", "vibration", "傷", "ベアリング", "異音", "振動"):
        assert word not in text


def test_my_number_check_digit_follows_the_official_algorithm() -> None:
    # P_n from the right: weights 2..7 then 2..6; 11 - (sum mod 11), or 0 when sum mod 11 <= 1
    first = "12345678901"
    weights = [2, 3, 4, 5, 6, 7, 2, 3, 4, 5, 6]
    total = sum(int(d) * w for d, w in zip(reversed(first), weights, strict=True))
    expected = 0 if total % 11 <= 1 else 11 - total % 11
    assert my_number_check_digit(first) == expected
    assert is_valid_my_number(first + str(expected))
    assert not is_valid_my_number(first + str((expected + 1) % 10))
    assert not is_valid_my_number("1234")


def test_name_tags_are_legible_and_boxed_in_ground_truth(
    small: tuple[Path, dict[str, Any]],
) -> None:
    root, gt = small
    tags = gt["image_pii"]
    per_asset = {a: sum(t["device"] == f"cam-{a}" for t in tags) for a in ("press-1", "press-2")}
    assert all(5 * 2 <= n <= 5 * 8 for n in per_asset.values()), per_asset  # a few per minute
    for tag in tags:
        assert tag["entity"] == "PERSON"
        assert re.fullmatch(r"[A-Z]\. [A-Z]+", tag["text"])
        x0, y0, x1, y1 = tag["bbox"]
        assert 0 <= x0 < x1 <= 320
        assert 0 <= y0 < y1 <= 240
        assert y1 - y0 >= 12
        assert x1 - x0 >= 6 * len(tag["text"])
        grey = np.asarray(Image.open(root / tag["file"]).convert("L"))
        bx0, by0, bx1, by1 = tag["badge_bbox"]
        badge = grey[by0:by1, bx0:bx1]
        text = grey[y0:y1, x0:x1]
        assert (badge > 180).mean() > 0.5  # light badge
        assert (text < 90).mean() > 0.15  # dark letters
        assert tag["ts_ns"] == next(
            f["first_ts_ns"]
            for f in gt["devices"][tag["device"]]["files"]
            if f["path"] == tag["file"]
        )


# -- MP4 and the default size ---------------------------------------------------------------------


def test_mp4_camera_is_decodable_with_exact_pts(tmp_path: Path) -> None:
    cfg = SynthConfig(assets=1, minutes=0.5, camera="mp4", workers=1, seed=2)
    generate_factory(cfg, tmp_path / "f")
    gt = json.loads((tmp_path / "f" / "ground_truth.json").read_text())
    (entry,) = gt["devices"]["cam-press-1"]["files"]
    assert re.fullmatch(rf"press-1/cam/cam-press-1_({STAMP})\.mp4", entry["path"])
    with av.open(str(tmp_path / "f" / entry["path"])) as box:
        stream = box.streams.video[0]
        assert stream.codec_context.name in ("h264", "mpeg4")
        created = box.metadata["creation_time"]
        frames = [(f.pts, f.time_base) for f in box.decode(stream)]
    assert created == entry_stamp_iso(entry["first_ts_ns"])
    assert len(frames) == entry["samples"] == len(entry["frame_ts_ns"])
    start = entry["first_ts_ns"]
    assert start % NS_PER_S == 0  # MP4 creation_time has whole seconds: the camera starts on one
    for (pts, tb), ts in zip(frames, entry["frame_ts_ns"], strict=True):
        assert pts is not None
        assert tb is not None
        assert pts * tb.numerator * NS_PER_S // tb.denominator == ts - start
    model = clock(gt, "cam-press-1")
    assert model.to_reference(start) <= gt["start_ns"]


def test_default_size_runs_fast(tmp_path: Path) -> None:
    summary = generate_factory(SynthConfig(), tmp_path / "f")  # 3 assets x 10 min, 2 workers
    assert summary.samples["frames"] == 3 * 1200
    assert summary.files["camera"] == 3600
    assert summary.samples["accel_samples"] >= 3 * 600 * 5000 * (1 - 1e-4)
    assert summary.samples["audio_samples"] >= 3 * 600 * 16000 * (1 - 1e-4)  # drift
    assert summary.elapsed_ns < 60 * NS_PER_S

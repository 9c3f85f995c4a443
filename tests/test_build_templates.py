"""Templates: every bundled task renders on a real record (JPEG frames from Pillow, a WAV
from soundfile, 3-axis vibration, notes), placeholders always match the attached media, the
phrasing choice is deterministic and spread, and template mistakes are ConfigErrors that
name the file, the task and the phrasing.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mmdata.build.labels import WindowLabels
from mmdata.build.samples import Sample
from mmdata.build.templates import BUNDLED_TEMPLATES, SampleContext, TemplateSet, make_samples
from mmdata.config import BuildConfig
from mmdata.errors import ConfigError, ConfigFileError, InputDataError

S = 1_000_000_000
T0 = 1_772_352_000 * S  # 2026-03-01T08:00:00Z
CLASSES = ["bearing_wear", "loose_part_rattle", "normal", "surface_scratch"]
TEMPLATES = TemplateSet.load()
FAULT = WindowLabels("bearing_wear", [("bearing_wear", T0 + 700_000_000, T0 + 2 * S)],
                     "ground_truth")  # fmt: skip
NORMAL = WindowLabels("normal", [], "ground_truth")


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def wav() -> bytes:
    t = np.arange(32_000) / 16_000
    buf = io.BytesIO()
    sf.write(buf, 0.2 * np.sin(2 * np.pi * 440 * t), 16_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


IMAGE, AUDIO = jpeg(0), wav()
FRAMES = [jpeg(1), jpeg(2)]


def record(record_id: str = "rec-0001", **over) -> dict:
    t = np.arange(10_000) / 5000.0
    vib = [(0.05 * np.sin(2 * np.pi * 25 * t + k)).astype(np.float32) for k in range(3)]
    rec = {
        "record_id": record_id, "asset_id": "press-1", "date": "2026-03-01",
        "window_start_ns": T0, "window_end_ns": T0 + 2 * S,
        "sensors": [{"stream_id": "acc-press-1", "device_id": "acc-press-1",
                     "sample_rate": 5000.0, "channels": ["ax", "ay", "az"], "first_ts_ns": T0,
                     "n_samples": 10_000, "values": vib}],
        "audio": {"bytes": AUDIO, "path": None},
        "image": {"bytes": IMAGE, "path": None},
        "frames": [
            {"stream_id": "cam-press-1", "ts_ns": T0 + 1_100_000_000, "bytes": FRAMES[1]},
            {"stream_id": "cam-press-1", "ts_ns": T0 + 100_000_000, "bytes": FRAMES[0]},
        ],
        "text": [
            {"stream_id": "notes", "ts_ns": T0 + 1_300_000_000, "staleness_ns": 0,
             "note_id": "n-2", "text": "Replaced the hydraulic filter.", "lang": "en",
             "kind": "maintenance_ticket"},
            {"stream_id": "notes", "ts_ns": T0 - 4 * S, "staleness_ns": 4 * S,
             "note_id": "n-1", "text": "Shift handover, all normal.", "lang": "en",
             "kind": "operator_note"},
        ],
        "labels": [],
        "provenance": [
            {"stream_id": "mic", "uri": "file:///d/mic.wav", "locator": "", "sha256": None},
            {"stream_id": "acc", "uri": "file:///d/acc.parquet", "locator": "", "sha256": None},
            {"stream_id": "mic", "uri": "file:///d/mic.wav", "locator": "x", "sha256": None},
        ],
    }  # fmt: skip
    rec.update(over)
    return rec


def context(**cfg) -> SampleContext:
    return SampleContext(BuildConfig(**cfg), TEMPLATES, CLASSES)


def by_task(samples: list[Sample]) -> dict[str, Sample]:
    return {s.task: s for s in samples}


# -- the bundled tasks ---------------------------------------------------------------------


def test_every_bundled_task_renders_on_a_real_record():
    samples, skipped = make_samples(record(), FAULT, context())
    assert skipped == []
    got = by_task(samples)
    assert sorted(got) == ["anomaly_time", "defect_class", "describe", "notes_qa"]
    for s in samples:
        assert s.prompt and s.response and s.media_problem() is None
        assert s.template.startswith(f"{s.task}/")
        assert s.record_id == "rec-0001"
        assert s.label == "bearing_wear"
        assert s.provenance == {
            "asset_id": "press-1", "window_start_ns": T0, "window_end_ns": T0 + 2 * S,
            "sources": ["file:///d/acc.parquet", "file:///d/mic.wav"],
            "record_date": "2026-03-01", "label_source": "ground_truth",
        }  # fmt: skip
    d = got["defect_class"]
    assert d.response == "bearing_wear"
    assert d.target == {"class": "bearing_wear"}
    assert all(c in d.prompt for c in CLASSES)
    assert "acc-press-1: 5000 Hz, 2.00 s, 3 channel(s)" in d.prompt  # sensors_as: text_summary
    a = got["anomaly_time"]
    assert a.target == {"change": True, "label": "bearing_wear", "start_ns": 700_000_000,
                        "end_ns": 2 * S}  # fmt: skip
    assert "0.7 s" in a.response
    desc = got["describe"].response
    assert "press-1" in desc and "2026-03-01T08:00:00.000Z" in desc
    assert "image, audio, sensors, notes" in desc and "bearing_wear" in desc
    assert "dominant 25 Hz" in desc
    n = got["notes_qa"]
    assert "hydraulic filter" in n.prompt + n.response
    assert [m.role for m in n.images] == ["frame"] and n.audios == []
    assert len({s.sample_id for s in samples}) == 4


def test_a_normal_window_answers_no_change_and_an_unlabelled_one_skips_label_tasks():
    got = by_task(make_samples(record(), NORMAL, context())[0])
    assert got["defect_class"].response == "normal"
    assert got["anomaly_time"].target == {"change": False, "label": "normal", "start_ns": None,
                                          "end_ns": None}  # fmt: skip
    assert got["anomaly_time"].response.startswith("No change")
    samples, skipped = make_samples(record(), WindowLabels(), context())
    assert [s.task for s in samples] == ["describe", "notes_qa"]
    assert skipped == [("defect_class", "no defect label"),
                       ("anomaly_time", "no interval and not a normal window")]  # fmt: skip


def test_an_ambiguous_window_skips_classification_but_still_localises_the_interval():
    partial = WindowLabels(None, [("bearing_wear", T0 + 1_500_000_000, T0 + 2 * S)],
                           "ground_truth")  # fmt: skip
    samples, skipped = make_samples(record(), partial, context())
    assert ("defect_class", "ambiguous defect label") in skipped
    a = by_task(samples)["anomaly_time"]
    assert a.label is None
    assert a.target["start_ns"] == 1_500_000_000 and "1.5 s" in a.response


def test_tasks_are_skipped_with_reasons_when_the_record_lacks_what_they_need():
    bare = record(text=[], image=None, frames=[], audio=None, sensors=[])
    samples, skipped = make_samples(bare, FAULT, context(tasks=["notes_qa", "describe"]))
    assert skipped == [("notes_qa", "no notes")]
    assert samples[0].images == [] and samples[0].audios == []
    assert "Nothing was recorded" in samples[0].response
    odd = make_samples(record(), WindowLabels("scuffing", [], "labels"), context())[1]
    assert ("defect_class", "label 'scuffing' is not among the dataset's classes") in odd


def test_intervals_are_in_seconds_from_the_window_start_rounded_to_a_tenth():
    lab = WindowLabels(
        "bearing_wear", [("bearing_wear", T0 + 340_000_000, T0 + 1_260_000_000)], "labels"
    )
    a = by_task(make_samples(record(), lab, context(tasks=["anomaly_time"]))[0])["anomaly_time"]
    assert "from 0.3 s to 1.3 s (bearing_wear)" in a.response
    assert (a.target["start_ns"], a.target["end_ns"]) == (340_000_000, 1_260_000_000)


# -- media and placeholders ----------------------------------------------------------------

SENSORS_AS = ["spectrogram_image", "waveform_image", "text_summary", "tensor"]
AUDIO_AS = ["audio", "spectrogram_image", "none"]
IMAGES = ["primary", "all", "none"]


@pytest.mark.parametrize(
    ("sensors_as", "audio_as", "images"), list(itertools.product(SENSORS_AS, AUDIO_AS, IMAGES))
)
def test_placeholders_always_match_the_attached_media(sensors_as, audio_as, images):
    ctx = context(sensors_as=sensors_as, audio_as=audio_as, images=images)
    samples, _ = make_samples(record(), FAULT, ctx)
    n_frames = {"primary": 1, "all": 2, "none": 0}[images]
    for s in samples:
        assert s.media_problem() is None, (s.task, s.prompt)
        roles = [m.role for m in s.images]
        if s.task == "notes_qa":  # media: [image]
            assert roles == ["frame"] * n_frames and s.audios == [] and s.tensors == {}
            continue
        expected = ["frame"] * n_frames
        expected += ["audio_spectrogram"] if audio_as == "spectrogram_image" else []
        expected += {"spectrogram_image": ["spectrogram"], "waveform_image": ["waveform"]}.get(
            sensors_as, []
        )
        assert roles == expected, s.task
        assert [m.ext for m in s.images] == ["jpg"] * n_frames + ["png"] * (len(roles) - n_frames)
        assert [(m.kind, m.ext) for m in s.audios] == ([("audio", "wav")] if audio_as == "audio"
                                                      else [])  # fmt: skip
        if sensors_as == "tensor":
            t = s.tensors["acc-press-1"]
            assert t.dtype == np.float32 and t.shape == (3, 10_000)
        else:
            assert s.tensors == {}
        assert ("ax: mean=" in s.prompt) == (sensors_as == "text_summary")


def test_all_frames_are_attached_in_time_order_and_named_in_the_legend():
    ctx = context(images="all", sensors_as="spectrogram_image", audio_as="audio", seed=3,
                  tasks=["describe"])  # fmt: skip
    samples = []
    for i in range(12):  # find a phrasing that prints the legend
        samples += make_samples(record(f"r{i}"), FAULT, ctx)[0]
    s = next(s for s in samples if "Attached:" in s.prompt)
    assert [m.data for m in s.images[:2]] == FRAMES
    assert (
        "Attached: image 1: camera frame at 0.1 s; image 2: camera frame at 1.1 s; "
        "image 3: spectrogram of acc-press-1 (ax, ay, az); audio 1: audio."
    ) in s.prompt


def test_placeholders_in_the_data_cannot_forge_media():
    notes = [{"ts_ns": T0, "note_id": "n", "text": "see <image> and <audio>", "lang": "en",
              "kind": "operator_note"}]  # fmt: skip
    samples, _ = make_samples(record(text=notes, asset_id="<image>"), FAULT, context())
    for s in samples:
        assert s.media_problem() is None
    assert "see [image] and [audio]" in by_task(samples)["notes_qa"].prompt


def test_frames_in_other_formats_become_png_and_garbage_is_an_input_error():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="BMP")
    s = make_samples(record(image={"bytes": buf.getvalue(), "path": None}), FAULT, context())[0]
    frame = s[0].images[0]
    assert frame.ext == "png" and Image.open(io.BytesIO(frame.data)).size == (8, 8)
    with pytest.raises(InputDataError, match="not a readable image"):
        make_samples(record(image={"bytes": b"not an image", "path": None}), FAULT, context())
    with pytest.raises(InputDataError, match="not a WAV"):
        make_samples(record(audio={"bytes": b"ID3 mp3?", "path": None}), FAULT, context())


# -- phrasing choice -----------------------------------------------------------------------


def test_the_phrasing_is_deterministic_and_spreads_over_the_phrasings():
    ctx = context(tasks=["defect_class", "notes_qa"], seed=5)
    first = [s.template for s in make_samples(record("r-42"), FAULT, ctx)[0]]
    assert first == [s.template for s in make_samples(record("r-42"), FAULT, ctx)[0]]
    task = TEMPLATES.tasks["defect_class"]
    digest = hashlib.sha256(b"5:r-42:defect_class").hexdigest()
    assert first[0] == f"defect_class/{int(digest, 16) % len(task.prompts)}"
    for t in TEMPLATES.tasks.values():
        counts = Counter(t.phrasing(0, f"r-{i}") for i in range(2000))
        n = len(t.prompts)
        assert sorted(counts) == list(range(n)), t.name  # every phrasing is used
        assert min(counts.values()) > 0.8 * 2000 / n, t.name  # and about evenly
    # the seed reshuffles the choice
    assert [task.phrasing(0, f"r-{i}") for i in range(30)] != [
        task.phrasing(1, f"r-{i}") for i in range(30)
    ]


def test_the_bundled_file_has_at_least_three_phrasings_per_task():
    assert TEMPLATES.source == str(BUNDLED_TEMPLATES)
    for task in TEMPLATES.tasks.values():
        assert len(task.prompts) >= 3, task.name


# -- template mistakes ---------------------------------------------------------------------

GOOD_TASK = """\
  t1:
    description: test
    needs: []
    media: [image]
    prompts:
      - "{{ media }}What is this?"
      - "{{ media }}PHRASING_ONE"
      - "{{ media }}And this?"
    response: "{{ asset_id }}"
"""


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "templates.yaml"
    p.write_text("version: 1\ntasks:\n" + body)
    return p


def error_of(p: Path) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        TemplateSet.load(p)
    return err.value


def test_a_users_templates_file_loads_and_renders(tmp_path: Path):
    ts = TemplateSet.load(write(tmp_path, GOOD_TASK))
    ctx = SampleContext(BuildConfig(tasks=["t1"]), ts, CLASSES)
    (s,), skipped = make_samples(record(), FAULT, ctx)
    assert s.response == "press-1" and s.prompt.startswith("<image>") and skipped == []


@pytest.mark.parametrize(
    ("phrasing", "why"),
    [
        ("{{ media }}{{ asset }} here?", "'asset' is undefined"),
        ("{{ media }}{{ asset_id ", "valid Jinja"),
        ("{{ media }}{% for x in notes %}", "valid Jinja"),
        ("{{ media }}{{ interval.start_s }}", "has no attribute 'start_s'"),  # None without needs
        ("{{ media }}{{ ''.__class__.__mro__ }}", "unsafe"),  # the sandbox
        ("No media here?", "must place {{ media }}"),
        ("{{ media }}{{ media }}Twice?", "must place {{ media }}"),
    ],
)
def test_a_bad_phrasing_raises_a_config_error_naming_file_task_and_phrasing(
    tmp_path: Path, phrasing, why
):
    p = write(tmp_path, GOOD_TASK.replace("{{ media }}PHRASING_ONE", phrasing.replace('"', '\\"')))
    err = error_of(p)
    msg = str(err)
    assert str(p) in msg
    assert "tasks.t1.prompts.1" in msg  # the task and the phrasing index
    assert phrasing[:40] in msg  # the phrasing quoted
    assert why in msg


def test_an_error_that_only_a_real_record_triggers_still_names_task_and_phrasing(tmp_path: Path):
    # the load-time dry run uses asset press-1, so only press-7's records reach the mistake
    trap = "Where? {% if asset_id == 'press-7' %}{{ no_such_var }}{% endif %}"
    ts = TemplateSet.load(write(tmp_path, GOOD_TASK.replace("What is this?", trap)))
    ctx = SampleContext(BuildConfig(tasks=["t1"]), ts, CLASSES)
    with pytest.raises(ConfigError) as err:
        for i in range(30):  # some record picks phrasing 0
            make_samples(record(f"r{i}", asset_id="press-7"), FAULT, ctx)
    assert "tasks.t1.prompts.0" in str(err.value) and "no_such_var" in str(err.value)


def test_an_unknown_task_in_the_config_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        context(tasks=["defect_class", "anomaly_tiem"])
    assert "build.tasks = 'anomaly_tiem'" in str(err.value)
    assert "anomaly_time" in str(err.value)  # the choices are listed


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (GOOD_TASK.replace("    needs: []\n", "    needs: [defects]\n"), "tasks.t1.needs.0"),
        (GOOD_TASK.replace("    media: [image]\n", "    media: [video]\n"), "tasks.t1.media.0"),
        (GOOD_TASK.replace("    description: test\n", ""), "tasks.t1.description"),
        (GOOD_TASK + "    colour: red\n", "tasks.t1.colour"),
        (GOOD_TASK.replace('response: "{{ asset_id }}"', "response: [a, b]"), "tasks.t1"),
        (GOOD_TASK.replace('response: "{{ asset_id }}"', 'response: "{{ x"'), "tasks.t1.response"),
        ("  t1:\n    description: x\n    prompts: []\n    response: y\n", "tasks.t1.prompts"),
    ],
)
def test_schema_errors_name_the_file_task_and_field(tmp_path: Path, body, field):
    p = write(tmp_path, body)
    msg = str(error_of(p))
    assert str(p) in msg and field in msg


def test_a_templates_file_that_is_not_yaml_or_not_a_mapping_is_rejected(tmp_path: Path):
    p = tmp_path / "bad.yaml"
    p.write_text("tasks: [unclosed\n")
    with pytest.raises(ConfigFileError, match="not valid YAML"):
        TemplateSet.load(p)
    p.write_text("- a list\n")
    assert "(top level)" in str(error_of(p))
    with pytest.raises(ConfigFileError, match="no such file"):
        TemplateSet.load(tmp_path / "missing.yaml")

"""The run report: one self-contained HTML file, checked by parsing it and in headless Chromium.

The main fixture runs the real pipeline on a tiny synthetic factory (2 assets x 1 min):
synth → ingest → sync → align, renders the report of that half-run, then scrub → build →
features → train → eval (with the ablation, smallest settings) and renders the full report.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmdata.align import run_align
from mmdata.build.stage import run_build
from mmdata.demo import factory_pipeline
from mmdata.errors import RunDirError
from mmdata.features.stage import run_features
from mmdata.ingest import run_ingest
from mmdata.records import COVERAGE_TYPE, FLAGS_TYPE
from mmdata.report.build import MAX_BINS
from mmdata.report.markdown import markdown_to_html
from mmdata.report.page import render_report, write_report
from mmdata.rundir import Manifest, RunDir, StageCounts, StageRecord
from mmdata.scrub.stage import run_scrub
from mmdata.sync import run_sync
from mmdata.synth import SynthConfig, generate_factory
from mmdata.train.stage import run_eval, run_train, train_overrides

KEY = "a-test-key-that-is-long-enough-0123456789"
SECTIONS = (
    "stages",
    "timeline",
    "clocks",
    "coverage",
    "audit",
    "dataset",
    "features",
    "training",
    "evaluation",
    "ablation",
)
LATER = ("audit", "dataset", "features", "training", "evaluation", "ablation")


@dataclass
class Runs:
    factory: Path
    run_dir: Path
    half: Path  # report of the run after synth, ingest, sync and align
    full: Path  # report of the complete run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("report")
    factory = root / "factory"
    generate_factory(SynthConfig(assets=2, minutes=1.0, seed=3, workers=1), factory)
    cfg = factory_pipeline(factory, root / "run")
    image = cfg.scrub.image.model_copy(update={"ocr": [], "profile_faces": False})
    cfg = cfg.model_copy(
        update={
            "scrub": cfg.scrub.model_copy(update={"image": image, "processes": 1}),
            "align": cfg.align.model_copy(update={"workers": 1}),  # a spawn pool costs ~10 s here
            "build": cfg.build.model_copy(
                update={"ground_truth": str(factory / "ground_truth.json")}
            ),
            "features": cfg.features.model_copy(update={"loader_workers": 0, "device": "cpu"}),
        }
    )
    cfg = train_overrides(
        cfg,
        device="cpu",
        max_steps=3,
        batch_size=8,
        eval_every=1,
        projector_hidden=16,
        model={
            "hidden_size": 32,
            "layers": 1,
            "heads": 2,
            "intermediate_size": 64,
            "vocab_size": 300,
        },
        lora={"r": 4, "alpha": 8},
        eval={"max_new_tokens": 4, "ablation": True},
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMDATA_PII_KEY", KEY)
        mp.setenv("HF_HUB_OFFLINE", "1")
        with RunDir.open(cfg.run_dir) as run:
            run_ingest(run, cfg)
            run_sync(run, cfg)
            run_align(run, cfg)
            half = write_report(run.root, root / "half.html")
            run_scrub(run, cfg)
            run_build(run, cfg)
            run_features(run, cfg)
            run_train(run, cfg)
            run_eval(run, cfg)
        full = write_report(cfg.run_dir)
    return Runs(factory, Path(cfg.run_dir), half, full)


# -- reading the page back -------------------------------------------------------------
@dataclass
class Page:
    sections: dict[str, str] = field(default_factory=dict)  # id -> text
    plots: dict[str, list[str]] = field(default_factory=dict)  # section id -> data-plot names
    urls: list[str] = field(default_factory=list)  # every src / href value
    body: dict[str, str] = field(default_factory=dict)
    scripts: int = 0


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.section: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section":
            self.section = a["id"]
            self.page.sections[self.section] = ""
            self.page.plots[self.section] = []
        elif tag == "svg" and "plot" in a.get("class", "").split():
            self.page.plots.setdefault(self.section or "", []).append(a["data-plot"])
        elif tag == "body":
            self.page.body = a
        elif tag == "script":
            self.page.scripts += 1
        for k in ("src", "href", "xlink:href", "action", "poster", "srcset"):
            if k in a:
                self.page.urls.append(a[k])

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.section = None

    def handle_data(self, data: str) -> None:
        if self.section is not None:
            self.page.sections[self.section] += data


def read_page(text: str) -> Page:
    reader = _Reader()
    reader.feed(text)
    return reader.page


# -- the report, parsed ----------------------------------------------------------------
def test_the_full_report_shows_every_section_with_its_plots(runs: Runs) -> None:
    text = runs.full.read_text(encoding="utf-8")
    assert runs.full == runs.run_dir / "report.html"
    page = read_page(text)
    assert tuple(page.sections) == SECTIONS
    for key in SECTIONS:
        assert "stage not run" not in page.sections[key], key
    assert page.plots["stages"] == ["stage-counts"]
    assert page.plots["timeline"] == ["timeline-press-1", "timeline-press-2"]
    assert page.plots["training"] == ["train-loss", "train-lr", "ablation-loss"]
    assert page.plots["evaluation"] == ["confusion-defect_class"]
    assert page.plots["ablation"] == ["ablation"]
    # the clock offsets of every device, as the sync stage recovered them
    models = json.loads((runs.run_dir / "sync" / "clock_models.json").read_text())
    for dev, m in models["devices"].items():
        assert dev in page.sections["clocks"]
        assert f"{m['offset_ns'] / 1e6:+,.3f}" in page.sections["clocks"]
        assert f"{m['drift_ppm']:+.3f}" in page.sections["clocks"]
    # counts per stage, the card, the ablation rows and the confusion classes
    manifest = json.loads((runs.run_dir / "manifest.json").read_text())
    for stage in ("ingest", "sync", "records", "scrubbed", "dataset", "features", "train", "eval"):
        assert stage in page.sections["stages"]
        assert manifest["stages"][stage]["status"] == "complete"
    assert "mmdata dataset" in page.sections["dataset"]  # the card's title, rendered
    assert "<h3>mmdata dataset</h3>" in text
    ablation = json.loads((runs.run_dir / "eval" / "ablation.json").read_text())
    for row in ablation["rows"]:
        assert row["variant"] in page.sections["ablation"]
    metrics = json.loads((runs.run_dir / "eval" / "metrics.json").read_text())
    for cls in metrics["tasks"]["defect_class"]["confusion"]["columns"]:
        assert html.escape(cls) in text
    # coverage per asset and the audit counts
    audit = page.sections["audit"]
    assert "findings anonymized" in audit and "Not re-scanned yet" in audit
    assert "press-1" in page.sections["coverage"] and "press-2" in page.sections["coverage"]


def test_the_report_holds_no_raw_pii_and_loads_nothing_from_outside(runs: Runs) -> None:
    text = runs.full.read_text(encoding="utf-8")
    truth = json.loads((runs.factory / "ground_truth.json").read_text())
    secrets = {s["text"] for n in truth["notes"] for s in n["spans"]}
    secrets |= {p["text"] for p in truth["image_pii"]}
    raw_notes = "".join(p.read_text(encoding="utf-8") for p in (runs.factory / "notes").glob("*"))
    assert any(s in raw_notes for s in secrets)  # the factory's notes do hold PII
    for s in sorted(secrets):
        assert s not in text and html.escape(s) not in text, s
    page = read_page(text)
    assert not [u for u in page.urls if re.match(r"\s*(https?:)?//", u, re.I)]
    assert not [u for u in page.urls if u.startswith(("data:", "file:", "javascript:"))]
    assert "url(" not in text and "@import" not in text and "<img" not in text
    assert "Content-Security-Policy" in text and "default-src 'none'" in html.unescape(text)


def test_the_same_run_renders_to_the_same_bytes(runs: Runs) -> None:
    first = render_report(runs.run_dir)
    assert render_report(runs.run_dir) == first
    assert runs.full.read_text(encoding="utf-8") == first


def test_a_half_run_pipeline_gets_a_report_whose_later_sections_say_stage_not_run(
    runs: Runs,
) -> None:
    page = read_page(runs.half.read_text(encoding="utf-8"))
    for key in LATER:
        assert "stage not run" in page.sections[key], key
        assert not page.plots.get(key), key
    # what did run is shown: streams, windows, clock offsets, coverage
    assert page.plots["timeline"] == ["timeline-press-1", "timeline-press-2"]
    assert "acc-press-1" in page.sections["clocks"]
    assert "stage not run" not in page.sections["coverage"]
    assert "Labels and splits: dataset stage not run" in page.sections["timeline"]
    not_run = re.search(r"Not run: ([^.]*)\.", page.sections["stages"])
    assert not_run is not None
    assert {"scrubbed", "dataset", "features", "train", "eval"} <= set(not_run[1].split(", "))


# -- in a real browser -----------------------------------------------------------------
@dataclass
class Browser:
    body: dict[str, str]
    console: list[str]
    screenshot: np.ndarray  # H x W x 3


def _chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail(
            "chromium is not installed: run `make test`, which installs the Debian "
            "packages of requirements/debian.txt (chromium among them)"
        )
    return exe


def open_in_chromium(page: Path, tmp: Path) -> Browser:
    """Load ``page`` headless: the DOM after scripts ran, console lines, and a screenshot
    tall enough to hold every plot."""
    base = [
        _chromium(),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
        f"--user-data-dir={tmp / 'profile'}",
    ]
    url = page.resolve().as_uri()
    dom = subprocess.run(
        [*base, "--enable-logging=stderr", "--v=1", "--window-size=1280,1000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = read_page(dom.stdout).body
    console = [ln for ln in dom.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    boxes = json.loads(body.get("data-plot-boxes", "[]"))
    height = min(max([y + h for _, y, _, h in boxes], default=1000) + 40, 16000)
    shot = tmp / "shot.png"
    res = subprocess.run(
        [*base, f"--window-size=1280,{height}", f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    return Browser(body, console, pixels)


def test_the_report_loads_in_headless_chromium_without_errors_and_shows_its_plots(
    runs: Runs, tmp_path: Path
) -> None:
    n_plots = runs.full.read_text(encoding="utf-8").count('<svg class="plot"')
    b = open_in_chromium(runs.full, tmp_path)
    assert b.body.get("data-ready") == "1"
    assert b.console == []
    assert b.body["data-errors"] == "0"
    assert int(b.body["data-plots"]) == int(b.body["data-plots-total"]) == n_plots >= 8
    boxes = json.loads(b.body["data-plot-boxes"])
    assert len(boxes) == n_plots
    for x, y, w, h in boxes:
        assert w > 100 and h > 40
        region = b.screenshot[y : y + h, x : x + w].astype(np.float64)
        assert region.shape[:2] == (h, w)  # the screenshot holds the plot
        assert region.std() > 15  # drawn: not a blank area
        assert (region.min(axis=2) < 200).mean() > 0.01  # ink, not just a tint


def test_the_browser_check_catches_a_page_with_errors(runs: Runs, tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    text = runs.half.read_text(encoding="utf-8")
    broken.write_text(
        text.replace(
            "<main>", '<main><img src="https://example.invalid/x.png"><script>boom();</script>', 1
        )
    )
    b = open_in_chromium(broken, tmp_path)
    assert b.body.get("data-ready") == "1"
    assert int(b.body["data-errors"]) >= 2
    assert any("Uncaught" in ln for ln in b.console)
    assert any("Content Security Policy" in ln for ln in b.console)


# -- small made-up run directories -----------------------------------------------------
def _record(name: str, counts: StageCounts | None = None) -> StageRecord:
    return StageRecord(
        status="complete",
        fingerprint=name,
        config_hash="0" * 64,
        started_ns=1_772_352_000_000_000_000,
        finished_ns=1_772_352_001_000_000_000,
        elapsed_ns=1_000_000_000,
        counts=counts,
    )


def _manifest(run: Path, stages: list[str]) -> None:
    m = Manifest(
        packages={},
        python="3.11.7",
        platform="linux-x86_64",
        mmdata_version="0.1.0",
        stages={s: _record(s, StageCounts(in_=3, out=3)) for s in stages},
    )
    run.mkdir(parents=True, exist_ok=True)
    (run / "manifest.json").write_text(m.model_dump_json(indent=2, by_alias=True))


def test_a_long_run_timeline_is_aggregated_into_a_bounded_number_of_marks(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _manifest(run, ["ingest", "records"])
    t0, n = 1_772_352_000_000_000_000, 30_000  # 30,000 windows of 2 s: almost 17 hours
    notes = t0 + np.arange(5_000, dtype=np.int64) * 12_000_000_000
    (run / "ingest" / "streams").mkdir(parents=True)
    pq.write_table(pa.table({"ts_ns": notes}), run / "ingest" / "streams" / "a.dev.notes.parquet")
    index = [
        {
            "stream_id": "a.dev.accel",
            "asset_id": "a",
            "device_id": "dev",
            "modality": "sensor",
            "file": "streams/a.dev.accel.parquet",
            "rows": n * 10_000,
            "ts_min_ns": t0,
            "ts_max_ns": t0 + n * 2_000_000_000,
            "segments": 1,
            "flags": {},
        },
        {
            "stream_id": "a.dev.notes",
            "asset_id": "a",
            "device_id": "dev",
            "modality": "text",
            "file": "streams/a.dev.notes.parquet",
            "rows": len(notes),
            "ts_min_ns": int(notes[0]),
            "ts_max_ns": int(notes[-1]),
            "segments": 1,
            "flags": {},
        },
    ]
    (run / "ingest" / "streams.json").write_text(json.dumps({"streams": index}))
    starts = t0 + np.arange(n, dtype=np.int64) * 2_000_000_000
    gap = np.arange(n) % 997 == 0
    table = pa.table(
        {
            "record_id": [f"r{i}" for i in range(n)],
            "asset_id": ["a"] * n,
            "window_start_ns": starts,
            "window_end_ns": starts + 2_000_000_000,
            "coverage": pa.array(
                [{"sensors": 1.0, "audio": None, "image": None, "text": 0.0}] * n, COVERAGE_TYPE
            ),
            "flags": pa.array(
                [{f.name: bool(g) if f.name == "gap" else False for f in FLAGS_TYPE} for g in gap],
                FLAGS_TYPE,
            ),
        }
    )
    (run / "records" / "asset_id=a" / "date=2026-03-01").mkdir(parents=True)
    pq.write_table(table, run / "records" / "asset_id=a" / "date=2026-03-01" / "part-0.parquet")
    text = render_report(run)
    svg = re.search(r'<svg class="plot" data-plot="timeline-a".*?</svg>', text, re.S)
    assert svg is not None
    marks = svg.group().count("<rect")
    assert marks <= 3 * MAX_BINS + 40  # notes ticks + window bins + backgrounds and legend
    assert len(text) < 250_000
    page = read_page(text)
    assert f"{n:,}" in page.sections["coverage"]  # every window counted
    assert f"{int(gap.sum())}" in page.sections["coverage"]  # and every gap flag


def test_a_broken_or_missing_file_gives_a_note_not_a_crash(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _manifest(run, ["ingest", "scrubbed", "features"])
    (run / "ingest").mkdir()
    (run / "ingest" / "streams.json").write_text("{not json")
    audit = run / "audit"
    audit.mkdir()
    summary = {
        "findings": 4,
        "records_with_findings": 2,
        "by_entity_modality": {"PERSON": {"text": 3, "image": 1}},
        "by_operator": {"pseudonym": 4},
        "pii_unchecked": {"records": 1},
        "residual": {"findings": 0, "records": 0, "by_entity": {}},
    }
    (audit / "summary.json").write_text(json.dumps(summary))
    (audit / "report.html").write_text("<html></html>")
    out = tmp_path / "elsewhere" / "r.html"
    page = read_page(write_report(run, out).read_text(encoding="utf-8"))
    assert "could not read ingest/streams.json: JSONDecodeError" in page.sections["timeline"]
    assert "missing file summary.json (in features/)" in page.sections["features"]
    assert "stage not run" in page.sections["dataset"]
    assert "Residual findings of the re-scan: 0 in 0 records" in page.sections["audit"]
    assert "../run/audit/report.html" in page.urls  # a relative link, never the content
    with pytest.raises(RunDirError, match=r"no manifest\.json"):
        render_report(tmp_path / "nowhere")
    (run / "manifest.json").write_text("{")
    with pytest.raises(RunDirError, match="cannot read"):
        render_report(run)


def test_the_card_markdown_subset_escapes_everything_and_emits_no_links() -> None:
    card = (
        "# Card <script>alert(1)</script>\n\nSee [docs](https://example.com) **now**.\n\n"
        "| a | b |\n|---|---|\n| `<i>` | x |\n\n- one\n- <b>two</b>\n\n```yaml\nk: <v>\n```"
    )
    out = markdown_to_html(card)
    assert "<script" not in out and "<b>" not in out and "<i>" not in out and "href" not in out
    assert "<h3>Card &lt;script&gt;alert(1)&lt;/script&gt;</h3>" in out
    assert "<td><code>&lt;i&gt;</code></td>" in out
    assert "<strong>now</strong>" in out
    assert "<pre><code>k: &lt;v&gt;</code></pre>" in out
    assert "<ul><li>one</li><li>&lt;b&gt;two&lt;/b&gt;</li></ul>" in out

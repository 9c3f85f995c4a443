"""The scrub stage on the synthetic factory: records → scrubbed records + audit + review."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmdata.align import run_align
from mmdata.demo import factory_pipeline
from mmdata.ingest import run_ingest
from mmdata.records import RECORD_SCHEMA
from mmdata.rundir import RunDir
from mmdata.scrub.audit import read_audit
from mmdata.scrub.review import review_run
from mmdata.scrub.stage import run_scrub
from mmdata.sync import run_sync
from mmdata.synth import SynthConfig, generate_factory

KEY = "a-test-key-that-is-long-enough-0123456789"


@pytest.fixture(scope="module")
def scrubbed_run(tmp_path_factory):
    import os

    os.environ["MMDATA_PII_KEY"] = KEY
    root = tmp_path_factory.mktemp("scrub")
    factory = root / "factory"
    generate_factory(SynthConfig(assets=1, minutes=1.2, seed=5, workers=1), factory)
    cfg = factory_pipeline(factory, root / "run")
    # OCR of every frame is covered by tests/test_scrub_image.py; here faces + metadata.
    image = cfg.scrub.image.model_copy(update={"ocr": [], "profile_faces": False})
    cfg = cfg.model_copy(update={"scrub": cfg.scrub.model_copy(update={"image": image})})
    with RunDir.open(cfg.run_dir) as run:
        run_ingest(run, cfg)
        run_sync(run, cfg)
        run_align(run, cfg)
        outcome = run_scrub(run, cfg)
    truth = json.loads((factory / "ground_truth.json").read_text())
    return root / "run", truth, outcome


def rows(path: Path) -> list[dict]:
    return [r for f in sorted(path.glob("asset_id=*/date=*/*.parquet"))
            for r in pq.read_table(f).to_pylist()]  # fmt: skip


def test_every_record_is_scrubbed_and_counts_reconcile(scrubbed_run):
    run, _, outcome = scrubbed_run
    before, after = rows(run / "records"), rows(run / "scrubbed")
    assert outcome.counts.in_ == len(before)
    assert outcome.counts.in_ == outcome.counts.out + outcome.counts.quarantined
    assert {r["record_id"] for r in after} <= {r["record_id"] for r in before}
    assert all(r["flags"]["scrubbed"] for r in after)
    schema = pq.read_schema(next((run / "scrubbed").rglob("part-*.parquet")))
    assert schema.names == RECORD_SCHEMA.names


def test_no_pii_from_the_notes_survives_in_scrubbed_text(scrubbed_run):
    run, truth, _ = scrubbed_run
    texts = " ".join(n["text"] for r in rows(run / "scrubbed") for n in r["text"])
    before = " ".join(n["text"] for r in rows(run / "records") for n in r["text"])
    secrets = {
        s["text"]
        for n in truth["notes"]
        for s in n["spans"]
        if s["entity"] in ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "EMPLOYEE_ID")
    }
    present = {s for s in secrets if s in before}
    assert present, "the window's notes must contain some PII to make this test meaningful"
    assert [s for s in present if s in texts] == []


def test_frames_are_inline_and_carry_no_camera_metadata(scrubbed_run):
    import io

    run, _, _ = scrubbed_run
    frames = [f for r in rows(run / "scrubbed") for f in r["frames"]]
    assert frames and all(f["path"] is None and f["bytes"] for f in frames)
    for f in frames[:10]:
        with Image.open(io.BytesIO(f["bytes"])) as im:
            assert len(im.getexif()) == 0


def test_audit_holds_findings_but_no_raw_pii_and_the_review_finds_no_residue(scrubbed_run):
    run, truth, _ = scrubbed_run
    audit = read_audit(run / "audit" / "findings.parquet")
    assert {r.entity for r in audit} >= {"PERSON"}
    review = review_run(run, sample=5, seed=1)
    assert review["summary"]["residual"]["findings"] == 0
    secrets = {s["text"] for n in truth["notes"] for s in n["spans"]}
    for path in (run / "audit").iterdir():
        data = path.read_bytes()
        for s in secrets:
            assert s.encode() not in data, (path.name, "raw PII in the audit")
        assert KEY.encode() not in data
    again = review_run(run, sample=5, seed=1)
    assert (run / "audit" / "report.html").read_text() and again["sample"] == review["sample"]


def test_the_review_rescans_every_frame_the_stage_did_not_vouch_for(scrubbed_run, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    """Frames written with untouched pixels were scanned clean by the same detectors; any
    other frame — redacted, or changed after the stage — is decoded and scanned again."""
    import hashlib
    import io
    import shutil

    import pyarrow as pa

    import mmdata.scrub.image as image

    src, _, _ = scrubbed_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    scanned = pq.read_table(run / "audit" / "scanned_frames.parquet").to_pylist()
    written = {r["frame_sha256"] for r in scanned}
    frames = {hashlib.sha256(f["bytes"]).hexdigest() for r in rows(run / "scrubbed")
              for f in r["frames"]}  # fmt: skip
    assert frames == written  # every frame written is listed
    seen: list[int] = []
    real = image.scrub_images

    def counted(datas, *a, **k):
        seen.append(len(datas))
        return real(datas, *a, **k)

    monkeypatch.setattr(image, "scrub_images", counted)
    changed = sum(r["pixels_changed"] for r in scanned)
    review_run(run, sample=2, seed=0)
    assert sum(seen) == changed
    # Swap one frame of one record for different pixels: the review must look at it.
    path = next((run / "scrubbed").rglob("part-*.parquet"))
    table = pq.read_table(path)
    recs = table.to_pylist()
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "JPEG")
    recs[0]["frames"][0]["bytes"] = buf.getvalue()
    pq.write_table(pa.Table.from_pylist(recs, schema=table.schema), path)
    seen.clear()
    review_run(run, sample=2, seed=0)
    assert sum(seen) == changed + 1


def test_bad_items_are_quarantined_with_their_reason_and_the_rest_is_scrubbed(scrubbed_run):
    import pyarrow as pa

    from mmdata.config import ImageScrubConfig, ScrubConfig
    from mmdata.quarantine import QuarantineLog
    from mmdata.scrub.stage import Scrubbers, scrub_table

    run, _, _ = scrubbed_run
    path = next((run / "records").rglob("part-*.parquet"))
    table = pq.read_table(path)
    recs = table.to_pylist()[:5]
    assert all(r["frames"] and r["text"] for r in recs[:4])
    frame = recs[0]["frames"][0]
    frame["bytes"] = Path(frame["path"]).read_bytes()[:300]  # a truncated JPEG
    frame["path"] = None
    filler = "Checked the coolant level on the press, all fine. " * 21_000
    recs[1]["text"][0]["text"] = filler + "Call John Smith on 090-1234-5678."  # > 1 MB
    recs[2]["text"][0]["text"] = ""
    recs[3]["text"][0]["text"] = "田中さんが John Smith に電話 (john.smith@example.com)。"
    cfg = ScrubConfig(image=ImageScrubConfig(ocr=[], profile_faces=False), processes=1)
    log = QuarantineLog("scrubbed")
    out, audit, dropped = scrub_table(
        Scrubbers(cfg, KEY.encode()), pa.Table.from_pylist(recs, schema=table.schema), log, "t"
    )
    assert dropped == 1 and out.num_rows == 4 == len(recs) - len(log)
    assert log.rows[0].item_id == recs[0]["record_id"] and "decode" in log.rows[0].message
    texts = {r["record_id"]: r["text"][0]["text"] for r in out.to_pylist()}
    assert len(texts[recs[1]["record_id"]]) > 1_000_000
    for rid in (recs[1]["record_id"], recs[3]["record_id"]):
        assert "John Smith" not in texts[rid] and "090-1234-5678" not in texts[rid]
    assert "田中" not in texts[recs[3]["record_id"]]
    assert "john.smith@example.com" not in texts[recs[3]["record_id"]]
    assert texts[recs[2]["record_id"]] == ""
    assert recs[0]["record_id"] not in {rid for rid, _ in audit}

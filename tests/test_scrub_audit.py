"""The audit trail and the reviewer's report: one row per finding, no raw PII anywhere.

Material: the synthetic factory's operator notes (English + Japanese, with ground-truth PII
spans), one of its camera frames with a name tag, and audio with a transcript. Text is
scrubbed here with a small real detector (every ground-truth PII string, searched for
anywhere) and the operators' tokens; the name tag is covered with a filled box over its
ground-truth box (standing in for the image scrubber, which is tested elsewhere); audio
goes through the real :func:`scrub_audio`.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytesseract
import pytest
from PIL import Image, ImageDraw
from pydantic import ValidationError

from mmdata import atomic, schemas
from mmdata.config import AudioScrubConfig, ScrubConfig
from mmdata.errors import InputDataError
from mmdata.scrub.audio import UNCHECKED_ENTITY, replacement, scrub_audio
from mmdata.scrub.audit import (
    AuditRow,
    AuditWriter,
    audit_summary,
    key_id,
    pick_sample,
    read_audit,
    rescan_text,
    rescan_transcript,
    row_from_finding,
    scrub_config_hash,
)
from mmdata.scrub.findings import Finding
from mmdata.scrub.keys import keyed_hash
from mmdata.scrub.report import (
    SampleContext,
    build_sample,
    image_context,
    record_resolver,
    render_report,
    text_context,
    write_report,
)
from mmdata.scrub.transcript import Transcript, Word, transcript_from_field
from mmdata.synth.camera import frame_count, render_frame
from mmdata.synth.config import SynthConfig
from mmdata.synth.notes import generate_notes
from mmdata.synth.plan import build_plan

from .conftest import ROOT
from .test_scrub_audio import voiced_standin, wav_bytes

KEY = b"audit-test-key-0123456789-secret"
MS = 1_000_000
OPERATORS = {"PERSON": "pseudonym", "EMPLOYEE_ID": "pseudonym", "PHONE_NUMBER": "mask"}


class KnownPiiDetector:
    """Finds every occurrence of known PII strings (longest first, non-overlapping)."""

    def __init__(self, vocabulary: dict[str, str]) -> None:
        self.vocab = sorted(vocabulary.items(), key=lambda kv: -len(kv[0]))

    def __call__(self, text: str, lang: str | None) -> list[Finding]:
        taken: list[tuple[int, int, str]] = []
        for value, entity in self.vocab:
            for m in re.finditer(re.escape(value), text):
                if all(m.end() <= a or m.start() >= b for a, b, _ in taken):
                    taken.append((m.start(), m.end(), entity))
        return [
            Finding("text", ent, 0.9, f"known.{ent.lower()}", OPERATORS.get(ent, "placeholder"),
                    keyed_hash(KEY, text[a:b]), a, b, model="known-list 1")
            for a, b, ent in sorted(taken)
        ]  # fmt: skip


def scrub_text(text: str, findings: list[Finding]) -> tuple[str, list[tuple[int, int]]]:
    """Replace each span by its operator's token; return the text and each token's span."""
    out, spans, pos = "", [], 0
    for f in findings:
        out += text[pos : f.start]
        token = replacement(f.operator, f.entity, text[f.start : f.end], KEY)
        spans.append((len(out), len(out) + len(token)))
        out += token
        pos = f.end or 0
    return out + text[pos:], spans


def _name_tag_frame() -> tuple[np.ndarray, Any]:
    plan = build_plan(SynthConfig(assets=1, minutes=2, seed=3, image_width=640, image_height=480))
    asset = plan.assets[0]
    for i in range(frame_count(plan, asset)):
        frame, tag = render_frame(plan, asset, i)
        if tag is not None:
            return frame, tag
    raise AssertionError("no name tag in the synthetic frames")


def _png(arr: np.ndarray | Image.Image) -> bytes:
    buf = io.BytesIO()
    (arr if isinstance(arr, Image.Image) else Image.fromarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Scrub a small set of records, write RUN/audit/*, the summary and the HTML report."""
    root = tmp_path_factory.mktemp("run")
    notes, truth = generate_notes(SynthConfig(assets=2, minutes=6, seed=11))
    spans = [s for t in truth for s in t["spans"]]
    spoken = {"Maria Garcia": "PERSON", "090-4411-2233": "PHONE_NUMBER"}
    vocab = {s["text"]: s["entity"] for s in spans} | spoken
    detect = KnownPiiDetector(vocab)
    cfg_hash = scrub_config_hash(ScrubConfig())
    writer = AuditWriter(cfg_hash, KEY)
    records: dict[str, dict[str, Any]] = {}
    n_text = 0
    for k, note in enumerate(notes):
        found = detect(note["text"], note["lang"])
        n_text += len(found)
        scrubbed, out_spans = scrub_text(note["text"], found)
        rid = f"rec-{k // 4:03d}"
        rec = records.setdefault(rid, {"text": []})
        field = f"text[{len(rec['text'])}].text"
        rec["text"].append({"text": scrubbed, "lang": note["lang"]})
        writer.add(rid, [replace(f, field=field) for f in found], out_spans)
    # an image with a name tag: box over the padded ground-truth box
    frame, tag = _name_tag_frame()
    img = Image.fromarray(frame)
    x0, y0, x1, y1 = tag.bbox
    ImageDraw.Draw(img).rectangle((x0 - 4, y0 - 4, x1 + 4, y1 + 4), fill=(0, 0, 0))
    records["rec-img"] = {"frames": [{"bytes": _png(img)}]}
    box = Finding("image", "PERSON", 0.8, "ocr+known", "box", keyed_hash(KEY, tag.text),
                  bbox=tag.bbox, field="frames[0]", model="tesseract 5")  # fmt: skip
    exif = Finding("metadata", "EXIF_ARTIST", 1.0, "exif", "strip", keyed_hash(KEY, "Maria Garcia"),
                   field="frames[0].exif.Artist")  # fmt: skip
    writer.add("rec-img", [box, exif])
    # audio with a transcript naming a person and a phone number
    rate = 16_000
    voice = voiced_standin(rate, seed=8, syllables=6)
    pcm = np.rint(np.pad(voice, (0, 3 * rate - voice.size)) * 20000).astype(np.int16)
    toks = [("call", 200, 400), ("Maria", 500, 800), ("Garcia", 800, 1200), ("on", 1250, 1400),
            ("090-4411-2233", 1400, 2200), ("please", 2300, 2700)]  # fmt: skip
    transcript = Transcript(tuple(Word(w, a * MS, b * MS) for w, a, b in toks), "en")
    cfg = AudioScrubConfig()
    res = scrub_audio(wav_bytes(pcm, rate), transcript, cfg, detect, KEY)
    assert res.transcript_out is not None
    records["rec-aud"] = {"audio": {"bytes": res.wav_bytes_out},
                          "transcript": res.transcript_out.to_words()}  # fmt: skip
    writer.add("rec-aud", res.findings, res.out_spans)
    # audio with speech and no transcript
    res2 = scrub_audio(wav_bytes(pcm, rate), None, cfg, detect, KEY)
    records["rec-mute"] = {"audio": {"bytes": res2.wav_bytes_out}}
    writer.add("rec-mute", res2.findings, res2.out_spans)
    audit_dir = root / "audit"
    writer.write(audit_dir / "findings.parquet")
    # re-scan the scrubbed output with the same detector
    residual = AuditWriter(cfg_hash, KEY)
    for rid, rec in records.items():
        for j, note in enumerate(rec.get("text", [])):
            residual.add(
                rid, rescan_text(note["text"], note["lang"], detect, field=f"text[{j}].text")
            )
        if rec.get("transcript"):
            t = transcript_from_field(rec["transcript"])
            assert t is not None
            residual.add(rid, rescan_transcript(t, detect))
    residual.write(audit_dir / "residual.parquet")
    summary = audit_summary(audit_dir / "findings.parquet", audit_dir / "residual.parquet")
    atomic.write_json(audit_dir / "summary.json", summary)
    sample = build_sample(writer.rows, 40, 7, record_resolver(records))
    write_report(audit_dir / "report.html", summary, sample)
    return {
        "root": root, "audit": audit_dir, "notes": notes, "spans": spans, "tag": tag,
        "frame": frame, "writer": writer, "records": records, "n_text": n_text,
        "summary": summary, "detect": detect, "spoken": spoken, "sample": sample,
    }  # fmt: skip


# --- the no-PII guarantee -------------------------------------------------------------------


def _forms(value: str) -> set[str]:
    return {value, value.casefold(), value.upper(), json.dumps(value)[1:-1]}


def _haystacks(path: Path) -> list[str]:
    raw = path.read_bytes()
    texts = [raw.decode("utf-8", "ignore"), raw.decode("latin-1")]
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        texts.append(json.dumps(table.to_pylist(), ensure_ascii=False, default=str))
        texts.append(str(table.schema.metadata))
    if path.suffix == ".html":
        import html

        texts.append(html.unescape(raw.decode("utf-8")))
    return texts


def test_audit_files_and_report_hold_no_raw_pii(run):
    pii = {s["text"] for s in run["spans"]} | set(run["spoken"]) | {run["tag"].text}
    pii |= {"Maria", "Garcia", run["tag"].text.split()[-1]}
    assert len(pii) > 30
    files = sorted(p for p in run["audit"].rglob("*") if p.is_file())
    assert {p.name for p in files} == {"findings.parquet", "residual.parquet", "summary.json",
                                       "report.html"}  # fmt: skip
    leaks = [
        (p.name, v) for p in files for h in _haystacks(p) for v in pii for f in _forms(v) if f in h
    ]
    assert leaks == []
    secret = KEY.decode()
    assert not any(secret in h for p in files for h in _haystacks(p))
    # control: the same scan does find the PII in the raw notes
    raw_notes = run["root"] / "notes.json"
    raw_notes.write_text(json.dumps(run["notes"], ensure_ascii=False))
    assert sum(f in h for h in _haystacks(raw_notes) for v in pii for f in _forms(v)) > 30


def test_report_image_crops_are_scrubbed_and_unreadable(run):
    html = (run["audit"] / "report.html").read_text()
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == 1  # the one image finding is in the sample
    surname = run["tag"].text.split()[-1]
    crop = Image.open(io.BytesIO(base64.b64decode(uris[0])))
    assert crop.info.get("exif") is None
    assert surname not in pytesseract.image_to_string(crop, config="--psm 6").upper()
    # control: the same crop of the *unscrubbed* frame is readable
    x0, y0, x1, y1 = run["tag"].bbox
    original = image_context(_png(run["frame"]), (x0, y0, x1, y1)).image_png
    assert original is not None
    assert surname in pytesseract.image_to_string(
        Image.open(io.BytesIO(original)), config="--psm 6"
    )


def test_report_is_self_contained(run):
    html = (run["audit"] / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    for forbidden in ("http://", "https://", "<link", "<script", "@import", "url(", 'src="/'):
        assert forbidden not in html, forbidden
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', html))
    assert "<svg" in html and "<style>" in html


# --- rows -----------------------------------------------------------------------------------


def test_one_row_per_finding_with_typed_locations(run):
    rows = read_audit(run["audit"] / "findings.parquet")
    assert rows == run["writer"].rows
    assert len(rows) == run["n_text"] + 2 + 2 + 1  # notes, image + exif, 2 spoken, unchecked
    cfg_hash = scrub_config_hash(ScrubConfig())
    assert {r.config_hash for r in rows} == {cfg_hash} and {r.key_id for r in rows} == {key_id(KEY)}
    text = [r for r in rows if r.modality == "text"]
    assert all(
        r.char_start is not None and r.out_start is not None and r.bbox_x0 is None for r in text
    )
    by_hmac = Counter(r.original_hmac for r in text)
    assert by_hmac == Counter(keyed_hash(KEY, s["text"]) for s in run["spans"])
    (img,) = [r for r in rows if r.modality == "image"]
    assert (img.bbox_x0, img.bbox_y0, img.bbox_x1, img.bbox_y1) == run["tag"].bbox
    assert img.original_hmac == keyed_hash(KEY, run["tag"].text) and img.char_start is None
    spoken = [r for r in rows if r.record_id == "rec-aud"]
    assert [(r.entity, r.operator) for r in spoken] == [
        ("PERSON", "mute+pseudonym"),
        ("PHONE_NUMBER", "mute+mask"),
    ]
    assert [(r.t0_ns, r.t1_ns) for r in spoken] == [(380 * MS, 1320 * MS), (1280 * MS, 2320 * MS)]
    (unchecked,) = [r for r in rows if r.record_id == "rec-mute"]
    assert unchecked.entity == UNCHECKED_ENTITY and unchecked.original_hmac == ""
    assert all(re.fullmatch(r"([0-9a-f]{64})?", r.original_hmac) for r in rows)


def test_parquet_layout_and_empty_audit(tmp_path):
    w = AuditWriter("a" * 64, KEY)
    w.write(tmp_path / "empty.parquet")
    table = pq.read_table(tmp_path / "empty.parquet")
    assert table.num_rows == 0 and table.schema.metadata[b"mmdata.schema"] == b"mmdata.audit/1"
    assert (
        table.schema.field("t0_ns").type == pa.int64()
        and table.schema.field("score").type == pa.float64()
    )
    assert table.column_names == list(AuditRow.model_fields)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.parquet"]  # no temp files left
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputDataError, match="unreadable"):
        read_audit(tmp_path / "bad.parquet")


def test_rows_refuse_raw_text_where_a_hash_belongs():
    raw = Finding("text", "PERSON", 0.9, "x", "placeholder", "John Smith", 0, 10)
    with pytest.raises(ValidationError, match="original_hmac"):
        row_from_finding("r", raw, "0" * 64)
    with pytest.raises(ValidationError):
        row_from_finding("r", Finding("text", "person name", 0.9, "x", "keep", "", 0, 1), "0" * 64)
    with pytest.raises(ValidationError):
        ok = row_from_finding("r", Finding("text", "PERSON", 1, "x", "keep", ""), "0" * 64)
        AuditRow.model_validate({**ok.model_dump(), "original": "John"})
    with pytest.raises(ValueError, match="out_spans"):
        AuditWriter("0" * 64).add("r", [raw], out_spans=[])


def test_schema_file_is_generated_from_the_model_and_validates_rows(run, monkeypatch):
    # until mmdata.schemas registers it, register it for this test only
    monkeypatch.setitem(schemas.SCHEMAS, "audit", (AuditRow, "audit.v1.json"))
    on_disk = (ROOT / "schemas" / "audit.v1.json").read_text()
    assert on_disk == schemas.render("audit"), "schemas/audit.v1.json is stale"
    validator = jsonschema.Draft202012Validator(json.loads(on_disk))
    for row in run["writer"].rows:
        assert list(validator.iter_errors(row.model_dump(mode="json"))) == []
    bad = {**run["writer"].rows[0].model_dump(mode="json"), "original_hmac": "Maria Garcia"}
    assert list(validator.iter_errors(bad))


# --- summary, residuals, sample -------------------------------------------------------------


def test_summary_counts_per_entity_and_modality(run):
    s = run["summary"]
    truth = Counter(sp["entity"] for sp in run["spans"])
    truth["PERSON"] += 2  # image tag + spoken name
    truth["PHONE_NUMBER"] += 1
    truth["EXIF_ARTIST"] += 1
    assert s["by_entity"] == dict(sorted(truth.items()))
    assert s["by_modality"] == {"audio": 2, "image": 1, "metadata": 1, "text": run["n_text"]}
    assert s["by_entity_modality"]["PERSON"] == {
        "text": truth["PERSON"] - 2,
        "image": 1,
        "audio": 1,
    }
    assert s["pii_unchecked"] == {"records": 1, "record_ids": ["rec-mute"]}
    assert s["residual"]["findings"] == 0 and s["findings"] == sum(truth.values())
    assert json.loads((run["audit"] / "summary.json").read_text()) == s


def test_a_missed_pii_shows_up_as_a_residual_finding(run):
    detect = run["detect"]
    note = next(n for n in run["notes"] if "EMP-" in n["text"])
    found = detect(note["text"], note["lang"])
    missed = next(f for f in found if f.entity == "EMPLOYEE_ID")
    scrubbed, _ = scrub_text(note["text"], [f for f in found if f is not missed])
    residual = AuditWriter("0" * 64, KEY)
    residual.add("rec-x", rescan_text(scrubbed, note["lang"], detect, field="text[0].text"))
    assert [(r.entity, r.operator, r.original_hmac) for r in residual.rows] == [
        ("EMPLOYEE_ID", "none", missed.original_hash)
    ]
    summary = audit_summary(run["writer"].rows, residual.rows)
    assert summary["residual"]["findings"] == 1 and summary["residual"]["by_entity"] == {
        "EMPLOYEE_ID": 1
    }
    html = render_report(summary, [])
    assert "1 residual finding(s) in 1 record(s)" in html
    assert note["text"][missed.start : missed.end] not in html


def test_rescan_ignores_our_own_tokens_and_maps_transcript_words_to_times(run):
    detect = run["detect"]
    assert rescan_text("call <PERSON_0123abcd45> or <EMAIL_ADDRESS> now", "en", detect) == []
    t = Transcript((Word("ask", 0, 10), Word("Maria", 20, 30), Word("Garcia", 30, 40)), "en")
    (f,) = rescan_transcript(t, detect)
    assert (f.modality, f.t0_ns, f.t1_ns, f.operator) == ("audio", 20, 40, "none")


def test_review_sample_is_reproducible_and_shown_after_scrubbing(run):
    rows = run["writer"].rows
    first = [i.row for i in run["sample"]]
    assert first == pick_sample(rows, 40, 7) == pick_sample(list(reversed(rows)), 40, 7)
    assert pick_sample(rows, 40, 8) != first
    assert len(pick_sample(rows, 10_000, 1)) == len(rows) and pick_sample(rows, 0, 1) == []
    summary = run["summary"]
    resolve = record_resolver(run["records"])
    a = render_report(summary, build_sample(rows, 12, 3, resolve))
    b = render_report(summary, build_sample(list(reversed(rows)), 12, 3, resolve))
    assert a == b  # same seed -> the same report, byte for byte
    for item in run["sample"]:
        ctx = item.context
        assert ctx is not None
        if item.row.modality == "text":
            rec = run["records"][item.row.record_id]
            scrubbed = rec["text"][int(item.row.field.split("[")[1].split("]")[0])]["text"]
            assert ctx.token == scrubbed[item.row.out_start : item.row.out_end]
            assert (
                ctx.token.startswith(("<", "*")) and ctx.before.lstrip("…") + ctx.token in scrubbed
            )
        if item.row.modality == "audio" and item.row.entity != UNCHECKED_ENTITY:
            assert ctx.envelope and ctx.span is not None and ctx.token.startswith(("<", "*"))


def test_contexts_degrade_to_notes_not_crashes():
    assert image_context(b"not an image", (0, 0, 5, 5)).note == "scrubbed image does not decode"
    assert text_context("short", None, near=99).note.startswith("token position")

    def broken(row: AuditRow) -> SampleContext | None:
        raise KeyError("John Smith")

    w = AuditWriter("0" * 64)
    w.add("r", [Finding("text", "PERSON", 0.9, "x", "placeholder", "", 0, 4, field="text[0].text")])
    (item,) = build_sample(w.rows, 1, 0, broken)
    assert item.context is not None and item.context.note == "context unavailable (KeyError)"
    assert "John" not in render_report(audit_summary(w.rows), [item])

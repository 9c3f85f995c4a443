"""The features stage end to end on a small generated ``RUN/dataset``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mmdata.config import EncoderConfig, PipelineConfig
from mmdata.errors import InputDataError, StageError
from mmdata.features.encoders import SensorWindow, build_encoder
from mmdata.features.stage import load_features, run_features, summary_lines
from mmdata.quarantine import read_quarantine
from mmdata.rundir import RunDir, StageCounts
from mmdata.runner import StageSpec, run_stage
from tests.test_features_encoders import part_image, save_vit, tone, vibration, wav

MEDIA_SCHEMA = pa.schema(
    [
        ("sha256", pa.string()),
        ("kind", pa.string()),
        ("role", pa.string()),
        ("ext", pa.string()),
        ("path", pa.string()),
    ]
)
SENSOR_SCHEMA = pa.schema(
    [
        ("sha256", pa.string()),
        ("record_id", pa.string()),
        ("stream_id", pa.string()),
        ("sample_rate", pa.float64()),
        ("channels", pa.list_(pa.string())),
        ("values", pa.list_(pa.list_(pa.float32()))),
    ]
)


def sensor_sha(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f4").tobytes()).hexdigest()


def write_dataset(out: Path) -> dict:
    """What the builder writes: media files + media.parquet + sensors.parquet."""
    media = [("image", "frame", "jpg", part_image(noise_seed=i, scratch=i == 2)) for i in range(5)]
    media.append(("image", "frame", "jpg", b"\xff\xd8\xff\xe0 not really a jpeg"))
    media += [
        ("audio", "audio", "wav", wav(tone(300.0 * (i + 1), seconds=0.5), 16000)) for i in range(3)
    ]
    rows = []
    (out / "media").mkdir(parents=True)
    for kind, role, ext, data in media:
        sha = hashlib.sha256(data).hexdigest()
        (out / "media" / f"{sha}.{ext}").write_bytes(data)
        rows.append(
            {"sha256": sha, "kind": kind, "role": role, "ext": ext, "path": f"media/{sha}.{ext}"}
        )
    pq.write_table(pa.Table.from_pylist(rows, MEDIA_SCHEMA), out / "media.parquet")
    windows = [
        ("r1", "acc.xyz", 5000.0, np.stack([vibration(False)[:5000]] * 3)),
        ("r2", "acc.xyz", 5000.0, np.stack([vibration(True)[:5000]] * 3)),
        ("r2", "temp", 10.0, np.linspace(20, 21, 40, dtype=np.float32)[None]),
        ("r3", "temp", 10.0, np.zeros((1, 4), np.float32)),
    ]  # too short: quarantined
    srows = [
        {
            "sha256": sensor_sha(v),
            "record_id": r,
            "stream_id": s,
            "sample_rate": sr,
            "channels": [f"c{i}" for i in range(len(v))],
            "values": v.tolist(),
        }
        for r, s, sr, v in windows
    ]
    pq.write_table(
        pa.Table.from_pylist(srows, SENSOR_SCHEMA), out / "sensors.parquet", row_group_size=2
    )
    return {"media": rows, "sensors": srows, "windows": windows, "media_bytes": media}


def pipeline(run_dir: Path, **features) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "run_dir": str(run_dir),
            "assets": {"a": {"sources": [{"connector": "notes", "path": "n.jsonl"}]}},
            "features": {"device": "cpu", "loader_workers": 0, **features},
        }
    )


@pytest.fixture
def run_dir(tmp_path):
    root = tmp_path / "run"
    info = {}

    def build(ctx):
        info.update(write_dataset(ctx.out_dir))
        return StageCounts(in_=1, out=1)

    with RunDir.open(root) as run:
        run_stage(run, StageSpec(name="dataset", config={"fixture": 1}), build)
    return root, info


def summary(root: Path) -> dict:
    return json.loads((root / "features" / "summary.json").read_text())


def test_every_item_is_encoded_or_quarantined_and_loads_back(run_dir):
    root, info = run_dir
    cfg = pipeline(root)
    with RunDir.open(root) as run:
        outcome = run_features(run, cfg)
    assert (outcome.counts.in_, outcome.counts.out, outcome.counts.quarantined) == (13, 11, 2)
    q = read_quarantine(root / "quarantine" / "features.parquet")
    assert sorted(r.error_class for r in q) == ["InputDataError", "InputDataError"]
    bad_image = info["media"][5]
    assert {r.item_id for r in q} == {bad_image["sha256"], info["sensors"][3]["sha256"]}
    assert any(r.source_ref == f"dataset/{bad_image['path']}" for r in q)
    index = pq.read_table(root / "features" / "index.parquet").to_pylist()
    assert [r["modality"] for r in index] == ["image"] * 5 + ["audio"] * 3 + ["sensor"] * 3
    assert {r["dim"] for r in index if r["modality"] == "image"} == {397}
    assert [r["dim"] for r in index if r["modality"] == "sensor"] == [78, 78, 26]
    assert all(not Path(r["shard"]).is_absolute() for r in index)
    # The stored vectors are what the encoders compute directly.
    shas = [r["sha256"] for r in info["media"][:5]]
    image = load_features(root, shas, "image")
    direct = build_encoder(EncoderConfig(encoder="thumbnail"), "image", device="cpu")
    expected = torch.stack(direct.encode_items([m[3] for m in info["media_bytes"][:5]]))
    torch.testing.assert_close(image, expected)
    window = info["windows"][1]
    sensor = load_features(root / "features", [info["sensors"][1]["sha256"]], "sensor")
    spectral = build_encoder(EncoderConfig(encoder="spectral"), "sensor", device="cpu")
    (want,) = spectral.encode_items([SensorWindow(window[3], window[2])])
    torch.testing.assert_close(sensor[0], want)
    s = summary(root)
    assert s["warm"] is False
    assert s["modalities"]["image"] | {"seconds": 0, "items_per_s": 0} == s["modalities"][
        "image"
    ] | {
        "items": 6,
        "unique": 6,
        "computed": 5,
        "cache_hits": 0,
        "corrupt_recomputed": 0,
        "quarantined": 1,
        "device": "cpu",
        "dtype": "float32",
        "shapes": [[397]],
        "seconds": 0,
        "items_per_s": 0,
    }
    with pytest.raises(InputDataError, match="quarantined"):
        load_features(root, [bad_image["sha256"]], "image")
    with pytest.raises(InputDataError, match="different shapes"):
        load_features(root, [r["sha256"] for r in info["sensors"][1:3]], "sensor")


def test_a_warm_rerun_computes_nothing_and_says_so(run_dir):
    root, _ = run_dir
    cfg = pipeline(root)
    lines: list[str] = []
    with RunDir.open(root) as run:
        run_features(run, cfg)
        before = (root / "features" / "index.parquet").read_bytes()
        again = run_features(run, cfg, force=True, progress=lambda d, *_: lines.append(d))
    assert not again.skipped
    s = summary(root)
    assert s["warm"] is True
    assert all(m["computed"] == 0 for m in s["modalities"].values())
    assert s["modalities"]["audio"]["cache_hits"] == 3
    assert lines[-1] == "warm cache: nothing computed" == summary_lines(s)[-1]
    assert (root / "features" / "index.parquet").read_bytes() == before
    with RunDir.open(root) as run:  # unchanged inputs and config: the runner skips it
        assert run_features(run, cfg).skipped


def test_changing_one_encoder_recomputes_only_its_modality(run_dir):
    root, _ = run_dir
    with RunDir.open(root) as run:
        run_features(run, pipeline(root))
        run_features(run, pipeline(root, audio={"encoder": "logmel", "pooling": "none"}))
    m = summary(root)["modalities"]
    assert (m["image"]["computed"], m["sensor"]["computed"], m["audio"]["computed"]) == (0, 0, 3)
    assert m["audio"]["shapes"] == [[51, 64]]
    # Dropping a modality skips it; its cache entries stay for later.
    with RunDir.open(root) as run:
        out = run_features(run, pipeline(root, audio=None, sensor=None))
    assert out.counts.in_ == 6 and set(summary(root)["modalities"]) == {"image"}
    assert len(list((root / "features" / "cache").iterdir())) == 4


def test_corrupt_cache_entries_are_recomputed_and_reported(run_dir):
    root, info = run_dir
    cfg = pipeline(root)
    with RunDir.open(root) as run:
        run_features(run, cfg)
        first = load_features(root, [r["sha256"] for r in info["media"][:5]], "image")
        index = pq.read_table(root / "features" / "index.parquet").to_pylist()
        shard = root / "features" / next(r["shard"] for r in index if r["modality"] == "image")
        data = bytearray(shard.read_bytes())
        data[-10] ^= 0x55
        shard.write_bytes(bytes(data))  # the cache is shared by hard links: fix nothing
        out = run_features(run, cfg, force=True)
    m = summary(root)["modalities"]["image"]
    assert m["corrupt_recomputed"] == 1 and m["computed"] == 1 and m["cache_hits"] == 4
    assert out.counts.quarantined == 2
    again = load_features(root, [r["sha256"] for r in info["media"][:5]], "image")
    torch.testing.assert_close(again, first)


def test_a_shared_cache_dir_and_a_tiny_vit_with_loader_workers(run_dir, tmp_path):
    root, info = run_dir
    vit = save_vit(tmp_path / "vit")
    cfg = pipeline(
        root,
        image={"encoder": str(vit), "batch_size": 2},
        audio=None,
        sensor=None,
        cache_dir=str(tmp_path / "shared"),
        loader_workers=2,
    )
    with RunDir.open(root) as run:
        out = run_features(run, cfg)
    assert (out.counts.out, out.counts.quarantined) == (5, 1)
    index = pq.read_table(root / "features" / "index.parquet").to_pylist()
    assert all(Path(r["shard"]).is_absolute() for r in index)
    assert index[0]["encoder"] == str(vit) and index[0]["encoder_id"] == "hf:vit"
    feats = load_features(root, [r["sha256"] for r in info["media"][:5]], "image")
    assert feats.shape == (5, 32)
    direct = build_encoder(EncoderConfig(encoder=str(vit)), "image", device="cpu")
    torch.testing.assert_close(
        feats, torch.stack(direct.encode_items([m[3] for m in info["media_bytes"][:5]]))
    )
    # Retrained weights at the same path: the runner re-runs, and every entry is new.
    save_vit(vit, seed=3)
    with RunDir.open(root) as run:
        again = run_features(
            run,
            cfg.model_copy(
                update={"features": cfg.features.model_copy(update={"loader_workers": 0})}
            ),
        )
    assert not again.skipped and summary(root)["modalities"]["image"]["computed"] == 5


def test_the_stage_needs_a_built_dataset(tmp_path):
    with RunDir.open(tmp_path / "run") as run, pytest.raises(StageError, match="mmdata build"):
        run_features(run, pipeline(tmp_path / "run"))

"""Bench workloads of the feature cache, each through a small Hugging Face vision model.

Models are ViTs built from config on 64×64 input and saved to the scratch folder — no
download — with their image processor (:data:`MODELS`): ``features`` uses a deep, narrow
one (12 layers, width 32, 16×16 patches) whose cost per call is mostly per-layer overhead,
the regime batching exists for (small batches on a GPU are launch-bound the same way);
``features-cache`` a wider one (4 layers, width 128, 8×8 patches) whose compute per item
is closer to what a small real encoder costs on a CPU, since a cache saves that compute.
The images are synthetic 320×240 JPEG conveyor scenes (a belt, parts, noise): 2,048 at
scale 1 for ``features``, 512 for ``features-cache``.

* ``features``: images encoded per second with the feature pipeline — media read, checked,
  decoded and preprocessed in loader worker processes, the model run on batches of 64 —
  against the loop everybody writes first: per image, read, preprocess, run the model on
  a batch of one. Same encoder object, same images, cache off on both sides; both sides
  are warmed up first (model loaded, the worker server started: a once-per-process cost
  given in ``details``). ``details`` checks both sides computed the same vectors. Both
  sides decode and preprocess every image (~0.7 ms on one core here), so on a 2-core
  machine the ratio is bounded near 5-6x whatever the batching.
* ``features-cache``: the ``features`` stage run on a run directory holding those images,
  warm (``force=True`` re-run: every entry comes from the cache, checksums verified)
  against cold (empty cache). ``details`` also gives the cache-level figure (verified
  lookups per second vs compute + put per second).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.bench import BenchOptions, BenchResult, best_of, workload

_BATCH = 64


#: ViT shapes (hidden, layers, heads, MLP, patch) of the two workloads, all on 64x64 input.
MODELS = {
    # Deep and narrow: a call costs mostly per-layer overhead, as small batches on a GPU do.
    "features": (32, 12, 2, 64, 16),
    # Wide enough that computing costs what a small real encoder costs per item on a CPU.
    "features-cache": (128, 4, 4, 512, 8),
}


def tiny_vit(folder: Path, shape: tuple[int, int, int, int, int]) -> Path:
    """Build and save a ViT of ``shape`` (fixed seed) and its image processor."""
    import torch
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    if (folder / "config.json").exists():
        return folder
    hidden, layers, heads, mlp, patch = shape
    torch.manual_seed(0)
    cfg = ViTConfig(
        image_size=64,
        patch_size=patch,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=mlp,
    )
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def scenes(n: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct synthetic conveyor frames as JPEG bytes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = Image.new("RGB", (320, 240), (70, 72, 75))
        d = ImageDraw.Draw(img)
        d.rectangle((0, 120, 320, 200), fill=(40, 40, 44))
        for _part in range(int(rng.integers(1, 4))):
            cx, cy, s = float(rng.uniform(20, 300)), float(rng.uniform(130, 190)), 17
            d.ellipse((cx - s, cy - s, cx + s, cy + s), fill=(180, 180, 184))
        arr = np.asarray(img).astype(np.float32) + rng.normal(0, 3, (240, 320, 3))
        buf = io.BytesIO()
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def _media(scratch: Path, images: list[bytes]) -> tuple[list[str], list[str]]:
    media = scratch / "dataset" / "media"
    media.mkdir(parents=True, exist_ok=True)
    paths, shas = [], []
    for data in images:
        sha = hashlib.sha256(data).hexdigest()
        (media / f"{sha}.jpg").write_bytes(data)
        paths.append(str(media / f"{sha}.jpg"))
        shas.append(sha)
    return paths, shas


def _start_workers(enc: Any, paths: list[str], shas: list[str], workers: int) -> float:
    """Start the loader's worker server (a once-per-process cost); return its seconds."""
    from mmdata.features.loader import MediaFiles, iterate_batches, prepare_workers

    prepare_workers([enc.preprocessor])
    t0 = time.perf_counter()
    source = MediaFiles(paths[:2], shas[:2], paths[:2])
    for _ in iterate_batches(source, enc.preprocessor, batch_size=1, workers=workers):
        pass
    return time.perf_counter() - t0


@workload("features", "HF image encoder: batched + loader workers vs one image at a time")
def bench_features(options: BenchOptions, scratch: Path) -> BenchResult:
    """Images encoded per second, batched vs one at a time (same encoder, cache off)."""
    import torch

    from mmdata.config import EncoderConfig
    from mmdata.features.encoders import build_encoder
    from mmdata.features.loader import MediaFiles, cpu_budget, iterate_batches

    n = max(64, int(2048 * options.scale))
    images = scenes(n)
    paths, shas = _media(scratch, images)
    model = tiny_vit(scratch / "vit", MODELS["features"])
    enc = build_encoder(EncoderConfig(encoder=str(model), batch_size=_BATCH), "image")
    workers = min(2, os.cpu_count() or 1)
    source = MediaFiles(paths, shas, paths)
    batched: dict[int, torch.Tensor] = {}
    single: list[torch.Tensor] = []

    def run_batched() -> None:
        with cpu_budget(enc.device, workers):
            for batch in iterate_batches(
                source, enc.preprocessor, batch_size=_BATCH, workers=workers
            ):
                batched.update(enc.encode_batch(batch))

    def run_single() -> None:
        single.clear()
        for p in paths:
            single.append(enc.encode_items([Path(p).read_bytes()], batch_size=1)[0])

    enc.encode_items(images[:2], batch_size=1)  # load the model, warm the kernels
    startup = _start_workers(enc, paths, shas, workers)
    t_batched = best_of(options.repeat, run_batched)
    t_single = best_of(options.repeat, run_single)
    diff = max(float((batched[i] - s).abs().max()) for i, s in enumerate(single))
    hidden, layers, _, _, patch = MODELS["features"]
    return BenchResult(
        workload="features",
        metric="images encoded per second (tiny ViT on 64x64, cache off)",
        unit="images/s",
        mmdata=n / t_batched,
        baseline=n / t_single,
        baseline_name="one image at a time: read, preprocess, model on a batch of 1 (same encoder)",
        details={
            "images": n,
            "model": f"ViT hidden {hidden}, {layers} layers, patch {patch}, 64x64",
            "batch_size": _BATCH,
            "loader_workers": workers,
            "device": str(enc.device),
            "dtype": enc.dtype,
            "seconds_batched": t_batched,
            "seconds_one_at_a_time": t_single,
            "max_abs_difference": diff,
            "worker_server_start_seconds": startup,
            "cpu_cores": len(os.sched_getaffinity(0)),
        },
    )


def _dataset_run(scratch: Path, images: list[bytes], model: Path, cache: Path | None) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmdata.config import PipelineConfig
    from mmdata.rundir import RunDir, StageCounts
    from mmdata.runner import StageSpec, run_stage

    root = scratch / "run"

    def build(ctx: Any) -> StageCounts:
        media = ctx.out_dir / "media"
        media.mkdir(parents=True)
        rows = []
        for data in images:
            sha = hashlib.sha256(data).hexdigest()
            (media / f"{sha}.jpg").write_bytes(data)
            rows.append(
                {
                    "sha256": sha,
                    "kind": "image",
                    "role": "frame",
                    "ext": "jpg",
                    "path": f"media/{sha}.jpg",
                }
            )
        pq.write_table(pa.Table.from_pylist(rows), ctx.out_dir / "media.parquet")
        return StageCounts(in_=len(rows), out=len(rows))

    with RunDir.open(root) as run:
        run_stage(run, StageSpec(name="dataset", config={"bench": len(images)}), build)
    return root, PipelineConfig.model_validate(
        {
            "run_dir": str(root),
            "assets": {"a": {"sources": [{"connector": "camera", "path": "-"}]}},
            "features": {
                "image": {"encoder": str(model), "batch_size": _BATCH},
                "audio": None,
                "sensor": None,
                "loader_workers": min(2, os.cpu_count() or 1),
                "cache_dir": None if cache is None else str(cache),
            },
        }
    )


@workload("features-cache", "features stage on a warm cache vs the same stage on a cold one")
def bench_features_cache(options: BenchOptions, scratch: Path) -> BenchResult:
    """Stage items per second, warm (everything cached) vs cold (empty cache)."""
    import shutil

    import torch

    from mmdata.config import EncoderConfig
    from mmdata.features.cache import FeatureCache, entry_key
    from mmdata.features.encoders import build_encoder
    from mmdata.features.stage import run_features
    from mmdata.rundir import RunDir

    n = max(64, int(512 * options.scale))
    images = scenes(n, seed=1)
    model = tiny_vit(scratch / "vit", MODELS["features-cache"])
    root, cfg = _dataset_run(scratch, images, model, None)
    enc = build_encoder(EncoderConfig(encoder=str(model)), "image")
    enc.encode_items(images[:1])  # imports and kernels warm for both sides
    dataset = root / "dataset"
    files = sorted(str(p) for p in (dataset / "media").iterdir())
    startup = _start_workers(enc, files, [Path(f).stem for f in files], cfg.features.loader_workers)

    def cold() -> None:
        shutil.rmtree(root / "features", ignore_errors=True)
        with RunDir.open(root) as run:
            run_features(run, cfg, force=True)

    def warm() -> None:
        with RunDir.open(root) as run:
            run_features(run, cfg, force=True)

    t_cold = best_of(options.repeat, cold)
    t_warm = best_of(options.repeat, warm)
    # The cache alone: verified lookups vs compute + put of the same entries.
    keys = [entry_key(hashlib.sha256(d).hexdigest(), enc.key) for d in images]
    cache_dir = scratch / "cache-only"
    shutil.rmtree(cache_dir, ignore_errors=True)
    t0 = time.perf_counter()
    with FeatureCache(cache_dir, enc.key) as cache:
        for lo in range(0, n, _BATCH):
            cache.put(keys[lo : lo + _BATCH], enc.encode_items(images[lo : lo + _BATCH]))
    t_put = time.perf_counter() - t0
    t0 = time.perf_counter()
    found, missing = FeatureCache(cache_dir, enc.key).lookup(keys)
    t_lookup = time.perf_counter() - t0
    if missing or not all(bool(torch.isfinite(t).all()) for t in found.values()):
        raise RuntimeError("the cache lost or mangled entries: the figure would be wrong")
    return BenchResult(
        workload="features-cache",
        metric="items through the features stage per second",
        unit="items/s",
        mmdata=n / t_warm,
        baseline=n / t_cold,
        baseline_name="the same stage with an empty cache (decode + tiny ViT, batched)",
        details={
            "images": n,
            "seconds_warm": t_warm,
            "seconds_cold": t_cold,
            "cache_lookup_items_per_s": n / t_lookup,
            "cache_compute_and_put_items_per_s": n / t_put,
            "cache_level_ratio": t_put / t_lookup,
            "worker_server_start_seconds": startup,
            "device": str(enc.device),
        },
    )

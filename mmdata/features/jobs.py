"""The features stage on an engine: cache misses encoded by a Ray Data actor pool.

With ``engine: ray`` the stage looks up every modality's cache first, then plans the misses
as *jobs* — consecutive chunks of the misses, in the local engine's order, each a whole
number of encoder batches — and runs them all through one actor pool
(:meth:`~mmdata.engine.ray.RayEngine.map` with ``actors``; one GPU per actor when the
cluster has GPUs). :func:`features_job` (the job function) builds the encoder once per
process (actors are long-lived, so a model loads once per actor), reads and decodes its
items itself from the dataset folder, encodes them batch by batch and writes the features
to a safetensors file in the stage's scratch folder; its JSON result names the file and
says, per batch, which items were encoded and which failed to decode. The driver takes
the jobs in order and puts their features into the cache batch by batch, exactly as the
local path does, so the cache shards, the cache index and ``index.parquet`` are
byte-identical to a local run. Nothing is pickled: jobs and results are JSON, tensors
safetensors.

A job that raises as a whole (not one bad item: those are reported per item) quarantines
its items with the reason; a setup failure (the encoder cannot be built on the worker, or
computes under another key there) fails the stage.

>>> chunks(10, batch_size=4, batches_per_job=1)
[(0, 4), (4, 8), (8, 10)]
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmdata import atomic
from mmdata.config import EncoderConfig, PipelineConfig
from mmdata.engine import Engine, JobFailure, JobResult, Resources
from mmdata.errors import DependencyError, InputDataError, MmdataError, StageError
from mmdata.features.cache import FeatureCache, read_shard
from mmdata.features.encoders import Encoder, HFEncoder, build_encoder, resolve_device
from mmdata.features.loader import Batch, ItemSource, MediaFiles, SensorRows, iterate_batches

if TYPE_CHECKING:
    from mmdata.runner import StageContext

JOBS_PER_ACTOR = 4  # enough jobs to balance the pool without tiny jobs
MAX_BATCHES_PER_JOB = 8  # bounds a job's result file and what a failed job quarantines


@dataclass
class ModalityWork:
    """One modality's cache misses and what became of them (filled in by the compute step).

    ``source`` yields the missing items in ``missing`` order; ``failed`` maps an entry key
    to ``(error class, message)`` for its quarantine row; ``seconds`` is time spent on it.
    """

    enc: Encoder
    cache: FeatureCache
    missing: list[str]
    source: ItemSource | None
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)
    computed: int = 0
    done: int = 0
    seconds: float = 0.0

    def report(self, ctx: StageContext) -> None:
        """Progress over this modality's misses."""
        ctx.report(f"features: {self.enc.modality} ({self.enc.id})", self.done, len(self.missing))


def chunks(n: int, *, batch_size: int, batches_per_job: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges over ``n`` items, ``batches_per_job`` whole batches each.

    A job's batches start at multiples of ``batch_size`` counted from the first miss, so
    they hold exactly the items the local path batches together (see :func:`plan_jobs`).

    >>> chunks(5, batch_size=2, batches_per_job=2)
    [(0, 4), (4, 5)]
    """
    step = batch_size * batches_per_job
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def source_spec(source: ItemSource, lo: int, hi: int) -> dict[str, Any]:
    """Items ``[lo, hi)`` of a media or sensor source as plain JSON data for a job.

    >>> source_spec(SensorRows("/d/sensors.parquet", [3, 5, 9]), 1, 3)
    {'kind': 'sensors', 'path': '/d/sensors.parquet', 'rows': [5, 9]}
    """
    if isinstance(source, MediaFiles):
        return {
            "kind": "media",
            "paths": list(source.paths[lo:hi]),
            "sha256s": list(source.sha256s[lo:hi]),
            "refs": list(source.refs[lo:hi]),
        }
    if isinstance(source, SensorRows):
        return {"kind": "sensors", "path": source.path, "rows": list(source.rows[lo:hi])}
    raise TypeError(f"a {type(source).__name__} cannot travel in a features job")


def source_of(spec: dict[str, Any]) -> ItemSource:
    """The item source :func:`source_spec` described.

    >>> len(source_of({"kind": "sensors", "path": "s.parquet", "rows": [0, 1]}))
    2
    """
    if spec["kind"] == "media":
        return MediaFiles(spec["paths"], spec["sha256s"], spec["refs"])
    return SensorRows(spec["path"], spec["rows"])


def encoder_spec(enc: Encoder, cfg: EncoderConfig) -> dict[str, Any]:
    """What a worker needs to build ``enc`` (config, modality, device) and its key to check.

    >>> cfg = EncoderConfig(encoder="spectral")
    >>> spec = encoder_spec(build_encoder(cfg, "sensor", device="cpu"), cfg)
    >>> spec["modality"], spec["device"], process_encoder(spec).id
    ('sensor', 'cpu', 'spectral')
    """
    return {
        "config": cfg.model_dump(mode="json"),
        "modality": enc.modality,
        "device": enc.device.type,
        "key": enc.key,
    }


_PROCESS_ENCODERS: dict[str, Encoder] = {}


def process_encoder(spec: dict[str, Any]) -> Encoder:
    """This process's encoder for ``spec`` (built on first use: once per actor).

    Raises :class:`~mmdata.errors.DependencyError` (a setup failure: the stage fails) when
    the encoder cannot run here (no CUDA, a model that does not load) or computes under
    another key than the driver's — other weights or preprocessing on this node would give
    other features.

    >>> spec = {"config": {"encoder": "logmel"}, "modality": "audio", "device": "cpu",
    ...         "key": "0" * 64}
    >>> process_encoder(spec)
    Traceback (most recent call last):
    ...
    mmdata.errors.DependencyError: audio encoder 'logmel' has key ... on the driver
      fix: every node needs the same model files and mmdata version
    """
    name = f"{spec['key']}@{spec['device']}"
    enc = _PROCESS_ENCODERS.get(name)
    if enc is None:
        device = resolve_device(spec["device"])  # cuda without a GPU here: a setup error
        enc = build_encoder(
            EncoderConfig.model_validate(spec["config"]), spec["modality"], device=device
        )
        if enc.key != spec["key"]:
            raise DependencyError(
                f"{spec['modality']} encoder {spec['config']['encoder']!r} has key "
                f"{enc.key[:12]}... on this worker but {spec['key'][:12]}... on the driver",
                hint="every node needs the same model files and mmdata version",
            )
        if isinstance(enc, HFEncoder):
            try:  # here, not in a batch: a model that cannot load is a setup failure
                enc.model  # noqa: B018 - loads the weights
            except Exception as err:
                raise DependencyError(
                    f"{spec['modality']} encoder {spec['config']['encoder']!r} cannot be "
                    f"loaded on this worker: {type(err).__name__}: {str(err)[:300]}",
                    hint="check the model folder on every node (save_pretrained)",
                ) from err
        _PROCESS_ENCODERS[name] = enc
    return enc


def encode_batch(enc: Encoder, batch: Batch) -> tuple[dict[int, torch.Tensor],
                                                    list[tuple[int, str, str]]]:  # fmt: skip
    """Encode one batch: ``(features by item position, failed items)``, on either engine.

    A batch the encoder raises on is deterministic bad input for this encoder (a medium
    whose shape the model rejects...): its items are quarantined with the reason, the same
    on every engine, and the run goes on. Setup errors (a missing model, a misconfigured
    device) and running out of memory fail the stage instead.
    """
    try:
        return enc.encode_batch(batch), list(batch.errors)
    except (MemoryError, torch.cuda.OutOfMemoryError):
        raise
    except Exception as err:
        if isinstance(err, MmdataError) and not isinstance(err, InputDataError):
            raise
        why = f"the encoder failed on this item's batch: {type(err).__name__}: {err}"
        failed = [(pos, type(err).__name__, why) for positions, _ in batch.groups
                  for pos in positions]  # fmt: skip
        return {}, sorted(list(batch.errors) + failed)


def features_job(job: str) -> str:
    """Encode one chunk of cache misses (a worker's job; JSON in, JSON out).

    The job names the encoder (config, modality, device, key), the items (file paths under
    the run's dataset folder, or rows of its ``sensors.parquet``) and the safetensors file
    to write. Items are decoded here, in batches of the encoder's batch size, exactly as
    the local path's loader batches them. The result lists, per batch, the item positions
    encoded (in the order the encoder returned them: the order the driver puts them in the
    cache) and the items that failed, with their error class and message.

    >>> features_job(json.dumps({  # doctest: +SKIP
    ...     "encoder": encoder_spec(enc, cfg), "out": "RUN/.work/features/.jobs/job-000000.st",
    ...     "source": {"kind": "sensors", "path": "RUN/dataset/sensors.parquet", "rows": [0]}}))
    '{"out": "RUN/.work/features/.jobs/job-000000.st", "batches": [{"n": 1, "put": [0], ...'
    """
    spec = json.loads(job)
    enc = process_encoder(spec["encoder"])
    source = source_of(spec["source"])
    tensors: dict[str, torch.Tensor] = {}
    batches: list[dict[str, Any]] = []
    for batch in iterate_batches(
        source,
        enc.preprocessor,
        batch_size=enc.batch_size,
        workers=0,
        pin_memory=enc.device.type == "cuda",
    ):
        feats, errors = encode_batch(enc, batch)
        for pos, t in feats.items():
            tensors[str(pos)] = t.contiguous().clone()  # rows of one output: own storage
        batches.append({"n": len(batch.indices), "put": list(feats),
                        "errors": [list(e) for e in errors]})  # fmt: skip
    out = None
    if tensors:
        from safetensors.torch import save

        out = spec["out"]
        atomic.write_bytes(out, save(tensors))  # a retried job rewrites the same file
    return json.dumps({"out": out, "batches": batches})


@dataclass(frozen=True)
class Pool:
    """Where the jobs run: the engine, what each actor holds and how many actors."""

    engine: Engine
    resources: Resources
    actors: int


def ray_device(config: PipelineConfig, engine: Any) -> torch.device:
    """The encoders' device on the Ray cluster: ``cuda`` when ``features.device`` allows it
    and the cluster has GPUs (the driver itself may have none), else ``cpu``.

    >>> ray_device(cfg.model_copy(update={"engine": "ray"}), RayEngine("auto"))  # doctest: +SKIP
    device(type='cuda')
    """
    setting = config.features.device
    if setting == "cpu":
        return torch.device("cpu")
    gpus = engine.connect().cluster_resources().get("GPU", 0)
    if gpus > 0:
        return torch.device("cuda")
    if setting == "cuda":
        raise DependencyError(
            "features.device is 'cuda' but the Ray cluster has no GPU",
            hint="use device auto or cpu, or add GPU nodes",
        )
    return torch.device("cpu")


def ray_pool(config: PipelineConfig, engine: Any, device: torch.device) -> Pool:
    """The actor pool: ``features.actors`` actors, or by default one per GPU when the
    encoders run on CUDA, else ``features.loader_workers`` (at least one; the decoding
    happens in the actors) but no more than the cluster has CPUs.

    >>> ray_pool(cfg, engine, torch.device("cuda")).resources  # doctest: +SKIP
    Resources(num_cpus=1, num_gpus=1)
    """
    resources = engine.connect().cluster_resources()
    gpus = 1 if device.type == "cuda" else 0
    if config.features.actors is not None:
        actors = config.features.actors
    elif gpus:
        actors = max(1, int(resources.get("GPU", 1)))
    else:
        actors = max(1, min(config.features.loader_workers, int(resources.get("CPU", 1))))
    return Pool(engine, Resources(num_cpus=1, num_gpus=gpus), actors)


def plan_jobs(
    works: list[ModalityWork], specs: list[dict[str, Any]], scratch: Path, actors: int
) -> tuple[list[str], list[tuple[int, int, int]]]:
    """The jobs for every modality's misses and, per job, ``(work index, lo, hi)``.

    Why the features are bit-identical to the local engine's: an item's floating-point
    features may depend on the other items of its batch (the stacked shape picks kernels and
    their blocking — GEMMs on a GPU, bf16 autocast — and a batch is grouped by item shape).
    The local path batches a modality's misses in order, ``batch_size`` at a time from the
    first miss; each job here is a run of consecutive misses starting at a multiple of
    ``batch_size``, and the worker batches it by ``batch_size`` again, so every batch holds
    the same items in the same order and runs the same computation. Decoding is per item.
    The other thing that changes bits is torch's intra-op thread count on the CPU: measured
    here, logmel's resampling and STFT differ in the last bit from 4 threads up (1 and 2
    agree; thumbnail, spectral and a tiny ViT gave the same bits at 1, 2 and 8 threads, and
    thumbnail and the ViT at other batch sizes too). An actor runs one thread (Ray's default
    for a fractional-CPU actor), like the local loader workers; a local run on a many-core
    machine encodes with more threads (``cpu_budget``), so there the audio features may
    differ in the last bit.

    >>> jobs, owners = plan_jobs(works, specs, Path("scratch"), actors=2)  # doctest: +SKIP
    >>> owners  # 6 images in batches of 2, then 4 windows in 1s  # doctest: +SKIP
    [(0, 0, 2), (0, 2, 4), (0, 4, 6), (1, 0, 1), (1, 1, 2), (1, 2, 3), (1, 3, 4)]
    """
    jobs: list[str] = []
    owners: list[tuple[int, int, int]] = []
    for w, (work, enc_spec) in enumerate(zip(works, specs, strict=True)):
        if work.source is None:
            continue
        n_batches = -(-len(work.missing) // work.enc.batch_size)
        per_job = min(MAX_BATCHES_PER_JOB, max(1, -(-n_batches // (actors * JOBS_PER_ACTOR))))
        for lo, hi in chunks(
            len(work.missing), batch_size=work.enc.batch_size, batches_per_job=per_job
        ):
            out = scratch / f"job-{len(jobs):06d}.safetensors"
            jobs.append(
                json.dumps(
                    {
                        "encoder": enc_spec,
                        "source": source_spec(work.source, lo, hi),
                        "out": str(out),
                    }
                )
            )
            owners.append((w, lo, hi))
    return jobs, owners


def _ordered(results: Iterator[tuple[int, JobResult]], n: int) -> Iterator[tuple[int, JobResult]]:
    """Results in job order, each as soon as it and all before it have finished."""
    got: dict[int, JobResult] = {}
    nxt = 0
    for k, res in results:
        got[k] = res
        while nxt in got:
            yield nxt, got.pop(nxt)
            nxt += 1
    if nxt != n:
        raise StageError(
            f"features: {n - nxt} of {n} jobs never came back from the engine",
            hint="check the cluster's logs and re-run the stage",
        )


def _apply(ctx: StageContext, work: ModalityWork, lo: int, hi: int, payload: str) -> None:
    """Put one job's features into the cache batch by batch, as the local path does."""
    res = json.loads(payload)
    out = Path(res["out"]) if res["out"] else None
    tensors = read_shard(out) if out is not None else {}
    if sum(b["n"] for b in res["batches"]) != hi - lo:
        raise StageError(
            f"features: a job for items {lo}-{hi} returned "
            f"{sum(b['n'] for b in res['batches'])} items"
        )
    for b in res["batches"]:
        work.cache.put(
            [work.missing[lo + p] for p in b["put"]], [tensors[str(p)] for p in b["put"]]
        )
        work.computed += len(b["put"])
        for pos, err_class, message in b["errors"]:
            work.failed[work.missing[lo + pos]] = (err_class, message)
        work.done += b["n"]
        work.report(ctx)
    if out is not None:
        out.unlink()


def _fail(ctx: StageContext, work: ModalityWork, lo: int, hi: int, failure: JobFailure) -> None:
    """A job that raised as a whole: its items are quarantined with the reason."""
    for key in work.missing[lo:hi]:
        work.failed[key] = (failure.error_class, f"encoding this chunk failed: {failure.message}")
    work.done += hi - lo
    work.report(ctx)


def encode_on_pool(
    ctx: StageContext, works: list[ModalityWork], specs: list[dict[str, Any]], pool: Pool
) -> None:
    """Compute every modality's misses in one actor pool; fill in each ``work``.

    ``specs[i]`` is :func:`encoder_spec` of ``works[i]``. Job files go to a scratch folder
    in the stage's work folder (on shared storage with the run), removed as they are read.

    >>> encode_on_pool(ctx, works, specs, ray_pool(config, engine, device))  # doctest: +SKIP
    >>> works[0].computed, works[0].failed  # doctest: +SKIP
    (5, {'9f2c...': ('InputDataError', 'image cannot be decoded: ...')})
    """
    scratch = ctx.out_dir / ".jobs"
    scratch.mkdir(parents=True, exist_ok=True)
    jobs, owners = plan_jobs(works, specs, scratch, pool.actors)
    t0 = time.perf_counter()
    if jobs:
        results = pool.engine.map(
            features_job,
            jobs,
            name="features",
            workers=pool.actors,
            resources=pool.resources,
            actors=pool.actors,
        )
        for k, res in _ordered(results, len(jobs)):
            w, lo, hi = owners[k]
            work = works[w]
            if isinstance(res, JobFailure):
                what = f"features of {work.enc.modality} misses {lo}-{hi}"
                _fail(ctx, work, lo, hi, res.check(what))
            else:
                _apply(ctx, work, lo, hi, res)
            if k + 1 == len(jobs) or owners[k + 1][0] != w:  # this modality's last job
                now = time.perf_counter()
                work.seconds += now - t0
                t0 = now
    shutil.rmtree(scratch, ignore_errors=True)  # a killed attempt may leave a temp file

"""``mmdata bench align --engine ray``: Ray's figure next to the local engine's, same run.

Correctness only, at the smallest scale (performance goals live in benches, not tests). The
workload starts a local Ray cluster, or uses the one already running in this process.
"""

from __future__ import annotations

import pytest

from mmdata.bench import BenchOptions, run_workloads
from mmdata.errors import ConfigError


def test_bench_align_on_ray_reports_ray_next_to_local_measured_in_the_same_run(
    tmp_path, cli
) -> None:
    local, ray = run_workloads(["align"], BenchOptions(scale=0.01, engine="ray", workdir=tmp_path))
    assert (local.workload, ray.workload) == ("align", "align (ray)")
    assert local.unit == ray.unit == "samples/s"
    d = ray.details
    # Ray's figure against the local engine's alignment of the same records, same run
    assert ray.baseline == local.mmdata > 0 and ray.mmdata > 0
    assert ray.ratio == pytest.approx(d["ray_vs_local"]) == pytest.approx(ray.mmdata / local.mmdata)
    assert d["seconds_local"] == local.details["seconds_mmdata"]
    assert d["sensor_samples"] == local.details["sensor_samples"] > 0
    assert d["records_identical"] is True
    # start-up is reported apart from the steady-state alignment
    assert d["seconds_ray"] > 0 and d["seconds_ray_cluster_start"] >= 0
    assert d["seconds_ray_worker_warmup"] > 0
    assert d["ray_cpus"] >= 1 and d["seconds_local_pool_start"] > 0
    assert "cluster start" in ray.metric and "local engine" in ray.baseline_name


def test_bench_engine_option_is_local_or_ray() -> None:
    assert BenchOptions().engine == "local"
    with pytest.raises(ValueError, match="engine"):
        BenchOptions.model_validate({"engine": "spark"})


def test_bench_cli_refuses_an_unknown_engine(cli) -> None:
    r = cli("bench", "synth", "--engine", "spark")
    assert r.code == ConfigError.exit_code and "engine" in r.err

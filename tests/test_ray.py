"""Ray for independent archs (nascore.executor): 2 local Ray workers collect the records one process collects, train
the references and the random strategy's archs to the metrics one process gets, a task whose worker is killed is
retried to the same result, a killed Ray driver resumes without redoing finished archs, and without Ray the same work
runs in this process after one note."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nascore.arch import Arch
from nascore.cli import main
from nascore.executor import RAY_MISSING, LocalExecutor, RayExecutor
from nascore.parts import Parts
from nascore.performance.collect import Collector, collect, collect_one, plan_manifest
from nascore.performance.perfdata import PerfDataset
from nascore.spec import validate_spec

try:
    import ray
except ImportError:
    ray = None
else:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import this module
needs_ray = pytest.mark.skipif(ray is None, reason="Ray is an optional extra (pip install 'nascore[ray]')")


def spec_of(cache: Path, **extra) -> dict:
    """FBNet at width 0.25 on 32 px digit-scenes, classification, one short epoch per arch."""
    return {"seed": 0,
            "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 32, "num_val": 16, "num_test": 8,
                        "max_digits": 1, "cache_dir": str(cache)},
            "tasks": [{"name": "classification"}],
            "space": {"name": "fbnet", "width": 0.25, "input_size": 32, "head_channels": 64},
            "strategy": {"name": "dnas"},
            "train": {"epochs": 1, "batch_size": 16, "lr": 0.05, "references": False}, **extra}


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 worker CPUs for the module."""
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


def same_records(a: Path, b: Path) -> None:
    one, two = PerfDataset.read(a).records, PerfDataset.read(b).records
    assert [r.index for r in one] == [r.index for r in two]
    for x, y in zip(one, two):
        assert x.arch == y.arch and x.graph == y.graph and x.macs == y.macs and x.proxies == y.proxies
        assert {t: r.metrics for t, r in x.tasks.items()} == {t: r.metrics for t, r in y.tasks.items()}


@needs_ray
def test_ray_collects_the_records_one_process_collects(local_ray, tmp_path, cache_dir):
    spec = validate_spec(spec_of(cache_dir))  # this process trains with one thread (conftest), as each Ray task
    collect(spec, tmp_path / "local", 2, 0, LocalExecutor())
    collect(spec, tmp_path / "ray", 2, 0, RayExecutor(cpus_per_task=1))
    same_records(tmp_path / "local", tmp_path / "ray")


def rows(run: Path) -> list[dict]:
    return sorted((json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()),
                  key=lambda r: (r["phase"], r["epoch"]))


@needs_ray
def test_ray_trains_the_references_one_process_trains_and_resumes_the_unfinished(local_ray, tmp_path, cache_dir):
    spec = spec_of(cache_dir, space={"name": "branched", "backbone": "fbnet_a", "input_size": 32},
                   strategy={"name": "bmtas"}, train={"epochs": 1, "batch_size": 16, "lr": 0.01})
    spec["tasks"] = [{"name": "segmentation", "channels": 8}, {"name": "classification"}]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    space = validate_spec(spec).space.create()
    Arch(space="branched", config=space.config.model_dump(mode="json"),
         choices=space.reference_archs()["fully_shared"]).save(tmp_path / "arch.json")
    for executor in ("local", "ray"):
        assert main(["train", str(tmp_path / "arch.json"), "--spec", str(tmp_path / "spec.yaml"), "--out",
                     str(tmp_path / executor), "--executor", executor]) == 0
    local, run = tmp_path / "local", tmp_path / "ray"
    summary = json.loads((local / "summary.json").read_text())
    assert set(summary["archs"]["shared"]["references"]) == {"task_specific", "fully_shared"}
    assert json.loads((run / "summary.json").read_text()) == summary and rows(run) == rows(local)
    assert sorted(p.name for p in run.rglob("*.pt")) == sorted(p.name for p in local.rglob("*.pt"))
    # a driver killed before one reference finished: that one alone trains again
    for p in (run / "checkpoints" / "train_task_specific.pt", run / "train_task_specific_model.pt",
              run / "summary.json"):
        p.unlink()
    kept = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (run / "checkpoints").glob("*.pt")}
    assert main(["train", str(tmp_path / "arch.json"), "--spec", str(tmp_path / "spec.yaml"), "--out", str(run),
                 "--resume", "--executor", "ray"]) == 0
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in kept} == kept, "finished phases are not trained again"
    assert (run / "checkpoints" / "train_task_specific.pt").is_file()
    assert json.loads((run / "summary.json").read_text()) == summary and rows(run) == rows(local)


@needs_ray
def test_ray_trains_the_random_strategys_archs_as_one_process(local_ray, tmp_path, cache_dir):
    budget = {"epochs": 1, "batch_size": 16, "lr": 0.05}
    spec = spec_of(cache_dir, strategy={"name": "random", "archs": 3, "train": budget}, pareto={"samples": 0},
                   train={**budget, "references": False})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    for executor in ("local", "ray"):
        assert main(["run", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / executor), "--executor",
                     executor]) == 0
    assert rows(tmp_path / "ray") == rows(tmp_path / "local")
    assert (json.loads((tmp_path / "ray" / "summary.json").read_text())
            == json.loads((tmp_path / "local" / "summary.json").read_text()))


def dies_once(collector: Collector, marker: str, index: int):
    """Plan entry ``index``; the first attempt kills its own worker process."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid(), collect_one(collector, index)


@needs_ray
def test_a_task_whose_worker_is_killed_is_retried(local_ray, tmp_path, cache_dir):
    spec = validate_spec(spec_of(cache_dir))
    parts = Parts.build(spec)
    collector = Collector(plan_manifest(spec, parts, 2, 0), parts)
    marker = tmp_path / "died"
    results = dict(RayExecutor().run(dies_once, [(str(marker), 1)], collector))
    assert marker.exists(), "the first attempt ran and was killed"
    pid, record = results[0]
    assert pid != os.getpid()
    here = collect_one(collector, 1)
    assert record.model_dump(exclude={"tasks"}) == here.model_dump(exclude={"tasks"})
    assert record.tasks["classification"].metrics == here.tasks["classification"].metrics


@needs_ray
@pytest.mark.slow
def test_a_killed_ray_driver_resumes_without_redoing_finished_archs(local_ray, tmp_path, cache_dir):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_of(cache_dir)))
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "nascore.cli", "bench", "collect", str(spec), "--archs", "4", "--out", str(out),
           "--executor", "ray"]
    # a driver of this module's Ray, found through RAY_ADDRESS; Ray ends its tasks when it dies
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(list(out.glob("archs/*.json"))) < 2:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = sorted(out.glob("archs/*.json"))
    assert 2 <= len(done) < 4, f"the kill landed after {len(done)} of 4 archs; it must land inside the collection"
    kept = {p.name: p.read_bytes() for p in done}
    collect(validate_spec(yaml.safe_load(spec.read_text())), out, 4, 0, LocalExecutor())  # or Ray again
    assert {p.name: p.read_bytes() for p in done} == kept, "finished archs are not redone"
    assert [r.index for r in PerfDataset.read(out).records] == list(range(4))


def test_without_ray_the_work_runs_in_this_process_after_one_note(tmp_path, cache_dir):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_of(cache_dir)))
    code = ("import sys\nsys.modules['ray'] = None\nfrom nascore.cli import main\n"
            f"sys.exit(main(['bench', 'collect', {str(spec)!r}, '--archs', '1', '--out', {str(tmp_path / 'd')!r}, "
            "'--executor', 'ray']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count(RAY_MISSING) == 1
    assert "collected 1 archs" in proc.stdout
    assert [r.index for r in PerfDataset.read(tmp_path / "d").records] == [0]


@pytest.mark.parametrize("options, named", [(["--cpus-per-task", "0"], "--cpus-per-task"),
                                            (["--ray-address", "10.0.0.1:6379"], "--ray-address"),
                                            (["--executor", "ray", "--workers", "2"], "--workers")])
def test_bad_executor_options_are_named(tmp_path, cache_dir, capsys, options, named):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_of(cache_dir)))
    assert main(["bench", "collect", str(spec), "--archs", "1", "--out", str(tmp_path / "d"), *options]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "d").exists()

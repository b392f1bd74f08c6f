"""Performance predictors (AIO-P part 1): zero-cost proxies, label scaling, baselines, the aio-p GNN, performance
datasets (nascore bench collect: plan, records, resume, corrupt files), nascore predictor fit/eval/predict, and a
predictor from a plugin."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from installed import builtin_registry
from nascore import hookimpl
from nascore.cli import main
from nascore.errors import NonFiniteLossError
from nascore.executor import LocalExecutor
from nascore.parts import Parts
from nascore.performance.collect import collect, draw, plan_manifest
from nascore.performance.graph import NUMERIC_FEATURES, OPS, build_graph, graph_from_record, graph_record
from nascore.performance.perfdata import PerfDataset
from nascore.performance.predictors.aiop import AIOPPredictor, flops_scale
from nascore.performance.predictors.baselines import Baseline, MacsBaseline
from nascore.performance.predictors.file import PredictorFile
from nascore.performance.predictors.fitting import baseline_names, evaluate_file, fit_file
from nascore.performance.predictors.samples import labelled_samples
from nascore.performance.predictors.scoring import scores
from nascore.performance.proxies import naswot, synflow
from nascore.predictor import Sample
from nascore.registry import Registry, Source, get_registry
from nascore.spec import validate_spec
from processes import descendants, in_session, kill_all, maps, running
from workspace import snapshot


def tiny_spec(cache: Path, **train) -> dict:
    """FBNet at width 0.25 on 32 px digit-scenes, classification and saliency, one short epoch per task."""
    return {"seed": 0,
            "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 32, "num_val": 16, "num_test": 8,
                        "max_digits": 1, "cache_dir": str(cache)},
            "tasks": [{"name": "classification"}, {"name": "saliency", "channels": 8}],
            "space": {"name": "fbnet", "width": 0.25, "input_size": 32, "head_channels": 64},
            "strategy": {"name": "dnas"},
            "train": {"epochs": 1, "batch_size": 16, "lr": 0.05, "references": False, **train}}


@pytest.fixture(scope="module")
def collected(tmp_path_factory, cache_dir) -> tuple[Path, Path]:
    """A collection of 6 archs (spec file, dataset folder), made once for the module."""
    root = tmp_path_factory.mktemp("collected")
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(cache_dir)))
    assert main(["bench", "collect", str(spec), "--archs", "6", "--out", str(root / "data")]) == 0
    return spec, root / "data"


def _graph_sample(n_convs: int, label: float | None = None, macs: int = 10**6) -> Sample:
    layers: list[nn.Module] = []
    for _ in range(n_convs):
        layers += [nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()]
    model = nn.Sequential(nn.Conv2d(3, 4, 1), *layers, nn.AdaptiveAvgPool2d(1))
    return Sample(build_graph(model, 8), "t", macs, 1000, {}, label=label, choices={"n": str(n_convs)})


# -- proxies ------------------------------------------------------------------------------------------------
def test_synflow_matches_its_definition_on_a_linear_chain():
    """Two bias-free linear layers, weights made positive, input ones: R = sum(W2 W1 1); the score is
    sum |theta * dR/dtheta| = 2 R (each layer's term equals R)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5, bias=False), nn.Linear(5, 2, bias=False))
    w1, w2 = model[1].weight.detach().abs().double(), model[2].weight.detach().abs().double()
    r = float((w2 @ w1 @ torch.ones(12, dtype=torch.float64)).sum())
    assert synflow(model, 2, in_channels=3) == pytest.approx(math.log(2 * r), rel=1e-9)
    assert (model[1].weight < 0).any(), "the model itself is left untouched"


def test_naswot_is_the_log_determinant_of_the_hamming_kernel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU())
    x = torch.randn(5, 3, 2, 2)
    h1 = model[1](x.flatten(1))
    h2 = model[3](torch.relu(h1))
    codes = torch.cat([(h1 > 0), (h2 > 0)], 1).double()
    kernel = codes @ codes.t() + (1 - codes) @ (1 - codes).t()
    assert naswot(model, x) == pytest.approx(float(torch.linalg.slogdet(kernel)[1]), rel=1e-9)


# -- predictors ---------------------------------------------------------------------------------------------
def test_label_scaling_round_trips_and_is_aiop_eq5():
    samples = [_graph_sample(1, macs=m) for m in (10**5, 3 * 10**8, 2 * 10**9)]
    p = AIOPPredictor({"epochs": 1})
    p.mean, p.std = 0.3, 0.05
    y = torch.tensor([0.7, 0.55, 0.81], dtype=torch.float64)
    assert torch.allclose(p.from_standard(samples, p.to_standard(samples, y)), y, atol=1e-12)
    gflops = 2 * 3 * 10**8 / 1e9
    assert float(flops_scale(torch.tensor(gflops, dtype=torch.float64))) == pytest.approx(math.log10(gflops + 1) + 1)
    plain = AIOPPredictor({"flops_scaling": False})
    plain.mean, plain.std = 0.3, 0.05
    assert torch.allclose(plain.to_standard(samples, y), (y - 0.3) / 0.05)


def test_baseline_fits_its_line_and_reverses_a_falling_ranking():
    samples = [_graph_sample(1, label=1.0 - 0.1 * k, macs=10**k) for k in range(3, 8)]  # label falls with MACs
    b = MacsBaseline()
    b.fit(samples, torch.Generator())
    assert b.slope == pytest.approx(-0.1) and b.intercept == pytest.approx(1.0)
    new = [_graph_sample(1, macs=10**k) for k in (4.5, 6.5)]
    assert b.predict(new) == pytest.approx([0.55, 0.35])
    restored = MacsBaseline()
    restored.load_state(b.state())
    assert restored.predict(new) == b.predict(new)


def test_aiop_learns_a_graph_property_it_is_not_told():
    """Label = number of 3x3 convs in the graph (MACs equal, so the FLOPs scaling cannot give it away)."""
    fit = [_graph_sample(n, label=0.1 * n) for n in (1, 2, 3, 4, 6, 7, 8, 9) for _ in range(2)]
    held = [_graph_sample(n, label=0.1 * n) for n in (0, 5, 10)]
    p = AIOPPredictor({"epochs": 150, "lr": 3e-3, "batch_size": 8})
    p.fit(fit, torch.Generator().manual_seed(0))
    predicted = p.predict(held)
    assert scores(predicted, [s.label for s in held])["spearman"] == pytest.approx(1.0)
    again = AIOPPredictor({"epochs": 150, "lr": 3e-3, "batch_size": 8})
    again.fit(fit, torch.Generator().manual_seed(0))
    assert again.predict(held) == predicted, "fitting is deterministic given the generator"


def test_aiop_standardises_numeric_node_features_with_the_fitting_graphs():
    fit = [_graph_sample(n, label=0.1 * n) for n in (1, 2, 4)]
    p = AIOPPredictor({"epochs": 1})
    p.fit(fit, torch.Generator().manual_seed(0))
    raw = torch.cat([s.graph.x for s in fit])
    x = p._batch(fit).x
    assert torch.equal(x[:, :len(OPS)], raw[:, :len(OPS)]), "the op one-hot is left as it is"
    numeric, varies = x[:, len(OPS):], raw[:, len(OPS):].std(0) > 0
    assert torch.allclose(numeric.mean(0), torch.zeros(len(NUMERIC_FEATURES)), atol=1e-5)
    assert torch.allclose(numeric.std(0)[varies], torch.ones(int(varies.sum())), atol=1e-4)
    column = len(OPS) + int((~varies).nonzero()[0])  # constant over the fitting graphs: only centred, not blown up
    other = _graph_sample(3)
    other.graph.x[:, column] = raw[0, column] + 0.5
    assert torch.allclose(p._batch([other]).x[:, column], torch.full((other.graph.num_nodes,), 0.5))


def test_ranking_loss_option_trains():
    fit = [_graph_sample(n, label=0.1 * n) for n in range(1, 6)]
    p = AIOPPredictor({"epochs": 3, "ranking_weight": 1.0})
    p.fit(fit, torch.Generator().manual_seed(0))
    assert all(math.isfinite(v) for v in p.predict(fit))


def test_graph_record_round_trips_and_maps_unknown_ops_to_oov():
    g = _graph_sample(2).graph
    back = graph_from_record(json.loads(json.dumps(graph_record(g))))
    assert torch.equal(back.edge_index, g.edge_index) and back.ops == g.ops
    assert torch.allclose(back.x, g.x, atol=1e-6)
    record = graph_record(g)
    record["ops"][1] = "an-op-from-a-later-vocabulary"
    assert graph_from_record(record).ops[1] == "oov"


def test_fbnetv2_resolution_subsampling_is_a_pool_and_an_upsample():
    from nascore.spaces.fbnetv2 import FBNetV2Space

    config = yaml.safe_load((Path(__file__).parents[1] / "benchmarks/perfdata/fbnetv2.yaml").read_text())["space"]
    config.pop("name")
    space = FBNetV2Space(config)
    decisions = space.decisions()
    choices = {d.name: d.options[-1] if "resolution" in d.name else d.options[0] for d in decisions}
    assert any("resolution" in d.name for d in decisions)
    from nascore.arch import Arch

    graph = build_graph(space.build(Arch(space="fbnetv2", config=space.config.model_dump(), choices=choices)), 32)
    assert "upsample" in graph.ops and "avg_pool" in graph.ops


# -- performance datasets ----------------------------------------------------------------------------------
def test_draw_is_seeded_distinct_and_spans_the_macs_range(cache_dir):
    spec = validate_spec(tiny_spec(cache_dir))
    parts = Parts.build(spec)
    a, b = draw(parts, 12, 0), draw(parts, 12, 0)
    assert a == b and draw(parts, 12, 1) != a
    assert len({json.dumps(c, sort_keys=True) for c in a}) == 12
    supernet = spec.space.create().supernet()
    from nascore.costs.flops import FlopsCost

    table = supernet.price(FlopsCost(), 32, 3)
    costs = sorted(table.of_choices(c) for c in a)
    random_costs = sorted(table.of_choices(c) for c in draw(parts, 240, 5))
    # one arch per twelfth of a 240-arch pool sorted by MACs: the cheapest is in its lowest twelfth, the dearest in
    # its highest
    assert costs[0] <= random_costs[len(random_costs) // 12] and costs[-1] >= random_costs[-len(random_costs) // 12]


def test_collection_records_everything_per_arch(collected):
    spec, data = collected
    ds = PerfDataset.read(data)
    assert [r.index for r in ds.records] == list(range(6))
    assert set(ds.manifest.tasks) == {"classification", "saliency"}
    assert ds.manifest.tasks["saliency"].label == "val/saliency/max_f"
    for r in ds.records:
        assert r.arch.choices == ds.manifest.plan[r.index].choices
        assert r.macs > 0 and r.params > 0 and r.latency_ms is None
        assert set(r.proxies) == {"synflow", "naswot"}
        assert r.graph.ops[0] == "input" and r.graph.ops[-1] == "output"
        for task, result in r.tasks.items():
            assert result.label == result.metrics[ds.manifest.tasks[task].label]
            assert result.seconds > 0
    assert len(labelled_samples(ds, "classification")) == 6


def test_same_command_again_collects_nothing_and_another_plan_is_refused(collected, capsys):
    spec, data = collected
    before = snapshot(data)
    assert main(["bench", "collect", str(spec), "--archs", "6", "--out", str(data)]) == 0
    assert "collected 0 archs" in capsys.readouterr().out
    assert main(["bench", "collect", str(spec), "--archs", "7", "--out", str(data)]) == 2
    err = capsys.readouterr().err
    assert "dataset.json" in err and "archs" in err and "plan" in err
    assert snapshot(data) == before


@pytest.mark.parametrize("entry", ["another-draw", "not-an-arch"])
def test_resume_follows_the_stored_plan(entry, collected, tmp_path, capsys):
    """A collection planned by a nascore whose draw differed (same spec, seed and count) resumes its stored plan;
    a stored entry that is no arch of the space is refused, naming the entry, nothing written."""
    import shutil

    spec, source = collected
    data = tmp_path / "data"
    shutil.copytree(source, data)
    (data / "archs" / "00005.json").unlink()
    resolved = validate_spec(yaml.safe_load(spec.read_text()))
    stored = json.loads((data / "dataset.json").read_text())["plan"][5]["choices"]
    if entry == "another-draw":
        planned = next(c for c in draw(Parts.build(resolved), 20, 7) if c != stored)
    else:
        planned = {**stored, next(iter(stored)): "k7_e9"}
    _rewrite(data / "dataset.json", lambda d: d["plan"][5].update(choices=planned))
    before = snapshot(data)
    code = main(["bench", "collect", str(spec), "--archs", "6", "--out", str(data)])
    out, err = capsys.readouterr()
    if entry == "not-an-arch":
        assert code == 2 and f"plan[5].choices.{next(iter(stored))}" in err and "k7_e9" in err
        assert snapshot(data) == before
        return
    assert code == 0 and "resuming the stored plan" in out + err
    ds = PerfDataset.read(data)
    assert [r.index for r in ds.records] == list(range(6))
    assert ds.records[5].arch.choices == planned != stored


@pytest.mark.slow
def test_killed_collection_resumes_where_it_stopped(tmp_path, cache_dir):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(cache_dir, epochs=2)))
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "nascore.cli", "bench", "collect", str(spec), "--archs", "5", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and len(list(out.glob("archs/*.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(out.glob("archs/*.json"))
    assert 2 <= len(done) < 5, f"the kill landed after {len(done)} of 5 archs; it must land inside the collection"
    kept = {p.name: p.read_bytes() for p in done}
    assert main(["bench", "collect", str(spec), "--archs", "5", "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in done} == kept, "finished archs are not redone"
    ds = PerfDataset.read(out)
    assert [r.index for r in ds.records] == list(range(5))
    resolved = validate_spec(yaml.safe_load(spec.read_text()))
    assert [e.choices for e in ds.manifest.plan] == [e.choices for e in plan_manifest(resolved, Parts.build(resolved),
                                                                                      5, 0).plan]


@pytest.mark.slow
def test_a_terminated_collection_leaves_no_process(tmp_path, cache_dir):
    """SIGTERM to ``bench collect --workers 2`` while both workers train: the command and its workers end (none is
    left orphaned, training on), and no process of its session is left."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(cache_dir, epochs=50)))  # an arch trains for a while
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "nascore.cli", "bench", "collect", str(spec), "--archs", "4", "--workers", "2",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        workers: set[int] = set()
        while proc.poll() is None and time.monotonic() < deadline and len(workers) < 2:
            started |= descendants(proc.pid)
            workers = {pid for pid in running(started) if maps(pid, "libtorch_cpu")}  # they run torch: a job
            time.sleep(0.1)
        assert proc.poll() is None and len(workers) >= 2, f"the workers did not start: {sorted(started)}"
        started |= descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 60  # SIGKILL reaches them at once: a wait for the kernel, not a speed limit
        while (running(started) or in_session(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(started) and not in_session(proc.pid), \
            f"left running: {sorted(running(started) | in_session(proc.pid))}"
    finally:
        proc.kill()
        proc.wait()
        kill_all(started | in_session(proc.pid))
    assert len(list(out.glob("archs/*.json"))) < 4 and (out / "dataset.json").is_file()


def test_workers_give_the_records_one_process_gives(tmp_path, cache_dir):
    """Two worker processes write the same archs, labels and graphs as one process (training here has one thread
    per process either way)."""
    spec = validate_spec(tiny_spec(cache_dir))  # this process: one thread (conftest), as each worker
    collect(spec, tmp_path / "one", 2, 0, LocalExecutor(1))
    collect(spec, tmp_path / "two", 2, 0, LocalExecutor(2))
    one, two = PerfDataset.read(tmp_path / "one"), PerfDataset.read(tmp_path / "two")
    for a, b in zip(one.records, two.records):
        assert a.arch == b.arch and a.graph == b.graph and a.macs == b.macs
        assert {t: r.metrics for t, r in a.tasks.items()} == {t: r.metrics for t, r in b.tasks.items()}


def test_with_a_latency_cost_the_record_holds_the_latency_estimate(tmp_path, cache_dir):
    raw = tiny_spec(cache_dir)
    raw["tasks"] = raw["tasks"][:1]
    raw["cost"] = {"name": "latency", "lut": str(tmp_path / "lut.json"), "min_run_time": 0.001}
    collect(validate_spec(raw), tmp_path / "data", 1, 0)
    record = PerfDataset.read(tmp_path / "data").records[0]
    assert record.latency_ms is not None and record.latency_ms > 0


def test_a_diverging_training_is_recorded_without_a_label(tmp_path, cache_dir, monkeypatch):
    import nascore.performance.collect

    real = nascore.performance.collect.train_epoch

    def diverging_saliency(network, optimizer, tasks, *args, **kwargs):
        if tasks[0].name == "saliency":
            raise NonFiniteLossError(0, 3)
        return real(network, optimizer, tasks, *args, **kwargs)

    monkeypatch.setattr(nascore.performance.collect, "train_epoch", diverging_saliency)
    collect(validate_spec(tiny_spec(cache_dir)), tmp_path / "data", 2, 0)
    ds = PerfDataset.read(tmp_path / "data")
    result = ds.records[0].tasks["saliency"]
    assert result.label is None and "diverged" in result.note and "step 3" in result.note
    assert labelled_samples(ds, "saliency") == [] and len(labelled_samples(ds, "classification")) == 2


def test_non_finite_loss_error_survives_a_process_boundary():
    import pickle

    back = pickle.loads(pickle.dumps(NonFiniteLossError(2, 7, "cost")))
    assert (back.epoch, back.step, back.what) == (2, 7, "cost") and "epoch 2, step 7" in str(back)


def _rewrite(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case", ["garbage-manifest", "foreign-manifest", "future-version", "missing-plan",
                                  "record-garbage", "record-wrong-index", "record-other-arch", "record-bad-edges",
                                  "record-unknown-task", "record-nan-feature", "not-a-folder", "missing"])
def test_corrupt_dataset_is_named(case, collected, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(collected[1], data)
    manifest, record = data / "dataset.json", data / "archs" / "00001.json"
    target = data
    if case == "garbage-manifest":
        manifest.write_bytes(b"\x00\xff{not json")
    elif case == "foreign-manifest":
        manifest.write_text(json.dumps({"images": [], "annotations": []}))
    elif case == "future-version":
        _rewrite(manifest, lambda d: d.update(version=2))
    elif case == "missing-plan":
        _rewrite(manifest, lambda d: d.pop("plan"))
    elif case == "record-garbage":
        record.write_text("{")
    elif case == "record-wrong-index":
        _rewrite(record, lambda d: d.update(index=2))
    elif case == "record-other-arch":
        _rewrite(record, lambda d: d["arch"]["choices"].update({next(iter(d["arch"]["choices"])): "skip-x"}))
    elif case == "record-bad-edges":
        _rewrite(record, lambda d: d["graph"]["edges"][0].append(10**6) or d["graph"]["edges"][1].append(0))
    elif case == "record-unknown-task":
        _rewrite(record, lambda d: d["tasks"].update(depth=d["tasks"]["saliency"]))
    elif case == "record-nan-feature":
        record.write_text(record.read_text().replace('"features":[[0.0,', '"features":[[NaN,', 1))
        assert "NaN" in record.read_text()
    elif case == "not-a-folder":
        target = tmp_path / "file.json"
        target.write_text("{}")
    elif case == "missing":
        target = tmp_path / "nowhere"
    before = snapshot(tmp_path)
    assert main(["predictor", "fit", str(target), "--out", str(tmp_path / "p.pt")]) == 2
    err = capsys.readouterr().err
    named = {"record-garbage", "record-wrong-index", "record-other-arch", "record-bad-edges", "record-unknown-task",
             "record-nan-feature"}
    assert str(record if case in named else manifest if "manifest" in case or case in (
        "future-version", "missing-plan") else target) in err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before


# -- fit, eval, predict -------------------------------------------------------------------------------------
def test_fit_eval_predict_flow(collected, tmp_path, capsys):
    _, data = collected
    out = tmp_path / "p.pt"
    assert main(["predictor", "fit", str(data), "--out", str(out), "--holdout", "0.5", "--set", "epochs=5"]) == 0
    file = PredictorFile.load(out)
    assert set(file.tasks) == {"classification", "saliency"}
    assert all(len(t.fitted) == 3 for t in file.tasks.values())
    assert set(file.tasks["classification"].baselines) == set(baseline_names(get_registry()))  # plugins' too
    capsys.readouterr()
    plot = tmp_path / "scatter.png"
    assert main(["predictor", "eval", str(out), str(data), "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert "3 archs not used in fitting (3 used in fitting, left out)" in text and "Spearman" in text and "aio-p" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = evaluate_file(file, [PerfDataset.read(data)])
    assert set(result["saliency"]["scores"]) == {"aio-p", *file.tasks["saliency"].baselines}
    arch = tmp_path / "arch.json"
    record = PerfDataset.read(data).records[0]
    arch.write_text(json.dumps(record.arch.model_dump()))
    assert main(["predictor", "predict", str(out), str(arch), "--task", "classification"]) == 0
    line = capsys.readouterr().out
    predicted = float(line.split("= ")[1].split()[0])
    sample = labelled_samples(PerfDataset.read(data), "classification")[0]
    assert predicted == pytest.approx(file.tasks["classification"].predictor.predict([sample])[0], abs=1e-4)
    assert main(["predictor", "predict", str(out), str(arch)]) == 2  # two tasks: --task is needed
    assert "classification, saliency" in capsys.readouterr().err


def test_saved_predictor_loads_weights_only_and_predicts_the_same(collected, tmp_path):
    _, data = collected
    ds = PerfDataset.read(data)
    file = fit_file([ds], "aio-p", {"epochs": 3}, seed=1)
    file.save(tmp_path / "p.pt")
    raw = torch.load(tmp_path / "p.pt", weights_only=True)
    assert raw["format"] == "nascore-predictor" and raw["vocab"][-1] == "oov"
    assert "mean" in raw["tasks"]["classification"]["state"] and "std" in raw["tasks"]["classification"]["state"]
    back = PredictorFile.load(tmp_path / "p.pt")
    samples = labelled_samples(ds, "classification")
    assert back.tasks["classification"].predictor.predict(samples) == \
        file.tasks["classification"].predictor.predict(samples)


@pytest.mark.parametrize("case", ["not-zip", "foreign-dict", "future-version", "missing-tasks", "bad-state",
                                  "other-vocab", "unknown-predictor"])
def test_corrupt_predictor_file_is_named(case, collected, tmp_path, capsys):
    _, data = collected
    path = tmp_path / "p.pt"
    fit_file([PerfDataset.read(data)], "aio-p", {"epochs": 1}).save(path)
    raw = torch.load(path, weights_only=True)
    if case == "not-zip":
        path.write_bytes(b"definitely not a checkpoint")
    else:
        if case == "foreign-dict":
            raw = {"network": {}, "optimizer": {}}
        elif case == "future-version":
            raw["version"] = 7
        elif case == "missing-tasks":
            del raw["tasks"]
        elif case == "bad-state":
            state = raw["tasks"]["saliency"]["state"]["network"]
            state[next(iter(state))] = torch.zeros(1)
        elif case == "other-vocab":
            raw["vocab"] = raw["vocab"][:-2] + ["oov"]
        elif case == "unknown-predictor":
            raw["predictor"] = "no-such-predictor"
        torch.save(raw, path)
    before = snapshot(tmp_path)
    assert main(["predictor", "eval", str(path), str(data), "--plot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_bad_predictor_options_name_the_field(collected, tmp_path, capsys):
    assert main(["predictor", "fit", str(collected[1]), "--out", str(tmp_path / "p.pt"), "--set", "widht=3"]) == 2
    assert "widht" in capsys.readouterr().err
    assert main(["predictor", "fit", str(collected[1]), "--out", str(tmp_path / "p.pt"), "--predictor",
                 "aiop"]) == 2
    assert "aio-p" in capsys.readouterr().err  # the suggestion
    assert not (tmp_path / "p.pt").exists()


# -- a predictor from a plugin ------------------------------------------------------------------------------
class _MeanOfFitting(Baseline):
    """Predicts every arch the fitting labels' mean (a plugin's baseline)."""

    name = "fitting-mean"

    def value(self, sample):
        return None


def test_plugin_predictor_registers_fits_and_is_compared_as_a_baseline(collected):
    plugin = types.SimpleNamespace(nascore_predictors=hookimpl(lambda: [_MeanOfFitting]))
    registry = builtin_registry()
    registry.register(plugin, Source("nascore-test-predictor", "mean = test:plugin"))
    registry.collect()
    assert not registry.problems
    assert registry.get("predictor", "fitting-mean") is _MeanOfFitting
    assert "fitting-mean" in baseline_names(registry)
    ds = PerfDataset.read(collected[1])
    file = fit_file([ds], "fitting-mean", {}, registry=registry)
    labels = [s.label for s in labelled_samples(ds, "classification")]
    assert file.tasks["classification"].predictor.predict(labelled_samples(ds, "classification")[:1]) == \
        pytest.approx([sum(labels) / len(labels)])
    assert "fitting-mean" in file.tasks["classification"].baselines


def test_schema_and_plugins_list_the_predictors(capsys):
    assert main(["schema"]) == 0
    defs = json.loads(capsys.readouterr().out)["$defs"]
    assert {"epochs", "lr", "flops_scaling", "ranking_weight"} <= set(defs["predictor_aio_p"]["properties"])
    assert main(["plugins"]) == (1 if get_registry().problems else 0)  # 1: an installed plugin failed to load
    rows = {tuple(line.split()[:2]) for line in capsys.readouterr().out.splitlines()}
    assert {("predictor", name) for name in ("aio-p", "macs", "params", "synflow", "naswot")} <= rows


def test_wrong_component_from_predictor_hook_is_a_problem():
    plugin = types.SimpleNamespace(nascore_predictors=hookimpl(lambda: [object]))
    registry = Registry()
    registry.register(plugin, Source("nascore-test-predictor", "bad = test:plugin"))
    registry.collect()
    assert any("nascore_predictors" in str(p) and "Predictor" in str(p) for p in registry.problems)


@pytest.mark.skipif(os.name != "posix", reason="FIFOs")
def test_dataset_manifest_that_is_a_fifo_is_refused(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    os.mkfifo(tmp_path / "data" / "dataset.json")
    assert main(["predictor", "fit", str(tmp_path / "data"), "--out", str(tmp_path / "p.pt")]) == 2
    err = capsys.readouterr().err
    assert "FIFO" in err and "dataset.json" in err


def test_shipped_performance_datasets_read(tmp_path):
    """benchmarks/perfdata/*.tar.gz (BENCHMARKS.md's collections) are valid datasets of this format."""
    import tarfile

    archives = sorted((Path(__file__).parents[1] / "benchmarks" / "perfdata").glob("*.tar.gz"))
    assert archives
    for archive in archives:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp_path / archive.stem, filter="data")
        manifests = sorted((tmp_path / archive.stem).rglob("dataset.json"))
        assert manifests, f"{archive.name} holds no dataset"
        for manifest in manifests:
            ds = PerfDataset.read(manifest.parent)
            assert len(ds.records) == ds.manifest.archs, f"{archive.name}: {manifest.parent.name} is unfinished"

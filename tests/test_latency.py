"""Latency cost model: lookup-table build and resume, fingerprints, corrupt tables, the ONNX Runtime
backend, the expected latency in a search, the budget loss, ``nascore lut build`` and ``nascore measure``."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from nascore.cli import main
from nascore.cost import op_key
from nascore.costs.latency import LatencyCost, fit_calibration
from nascore.costs.lut import entry_key, load_table
from nascore.costs.timing import OnnxRuntimeBackend
from nascore.errors import NascoreError
from nascore.objective import Budget, Multiplicative
from nascore.spaces.fbnet import FBNetSpace
from nascore.spaces.fbnet_blocks import make_block
from nascore.supernet import one_hot

SPACE = {"width": 0.25, "input_size": 32}
FAST = {"min_run_time": 0.005}  # timings in these tests are checked for plumbing, not for their values


def write_spec(tmp: Path, lut: Path, **cost) -> Path:
    spec = {"dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 32, "num_val": 8, "num_test": 4,
                        "cache_dir": str(tmp / "cache")},
            "tasks": [{"name": "classification"}],
            "space": {"name": "fbnet", **SPACE, "head_channels": 64},
            "strategy": {"name": "dnas", "epochs": 2, "warmup_epochs": 1, "batch_size": 8, "max_steps": 1},
            "cost": {"name": "latency", "lut": str(lut), **FAST, **cost}}
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def space_keys(batch: int = 1) -> set[str]:
    ops = FBNetSpace(SPACE).supernet().operations(32)
    return {entry_key(op_key(op.module), (batch, *op.input_shape[1:])) for op in ops}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """A table of the tiny FBNet space built with ``nascore lut build``."""
    tmp = tmp_path_factory.mktemp("lut")
    lut = tmp / "lut.json"
    spec = write_spec(tmp, lut)
    assert main(["lut", "build", str(spec)]) == 0
    return spec, lut


# -- building ---------------------------------------------------------------------------------
def test_build_measures_every_operation_once(built, capsys):
    spec, lut = built
    table = load_table(lut)
    assert set(table.entries) == space_keys()  # one entry per distinct (configuration, shape)
    assert len(table.entries) < 22 * 9 + 1  # repeated layers share entries
    assert all(e.median_ms > 0 and e.p90_ms >= e.median_ms * 0.5 and e.runs >= 1 for e in table.entries.values())
    assert table.overhead_ms is not None and table.overhead_ms > 0
    fp = table.fingerprint
    assert fp["backend"] == "torch" and fp["torch"] == torch.__version__ and fp["threads"] == 1
    assert fp["batch_size"] == 1 and fp["dtype"] == "float32" and fp["device"].startswith("cpu: ")
    assert fp["malloc"] == "keeps freed memory"  # glibc told not to unmap freed blocks (see timing.py)
    # a second build finds everything there, the calibration too
    assert main(["lut", "build", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "(0 measured now" in out and "calibration on 8 archs: measured = " in out
    assert load_table(lut).entries == table.entries


def test_build_resumes_a_partial_table(built, tmp_path, capsys):
    spec, lut = built
    data = json.loads(lut.read_text())
    kept = dict(list(data["entries"].items())[:10])
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({**data, "entries": kept}))
    assert main(["lut", "build", str(spec), "--out", str(partial)]) == 0
    total = len(data["entries"])
    assert f"({total - 10} measured now, 10 already in the table)" in capsys.readouterr().out
    resumed = load_table(partial)
    assert set(resumed.entries) == set(data["entries"])
    assert all(resumed.entries[k].model_dump() == v for k, v in kept.items())  # kept, not re-measured


@pytest.mark.slow
def test_killed_build_leaves_a_valid_table_that_resumes(tmp_path):
    lut = tmp_path / "lut.json"
    spec = write_spec(tmp_path, lut, min_run_time=0.05)
    proc = subprocess.Popen([sys.executable, "-m", "nascore.cli", "lut", "build", str(spec)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if lut.exists() and len(json.loads(lut.read_text())["entries"]) >= 5:  # atomic writes: always whole
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(load_table(lut).entries)
    assert 5 <= done < len(space_keys())
    # timing length is not part of the fingerprint: finish the rest quickly
    out = subprocess.run([sys.executable, "-m", "nascore.cli", "lut", "build", str(spec), "--set",
                          "cost.min_run_time=0.005"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "already in the table" in out.stdout and f"{done} already" in out.stdout
    assert set(load_table(lut).entries) == space_keys()


def test_batch_size_is_part_of_the_key_and_fingerprint(tmp_path):
    cost = LatencyCost({**FAST, "batch_size": 2})
    conv = nn.Conv2d(4, 4, 3, padding=1)
    cost.price(conv, (1, 4, 8, 8))
    assert list(cost.table.entries) == [entry_key(op_key(conv), (2, 4, 8, 8))]
    assert cost.fingerprint()["batch_size"] == 2


# -- fingerprints and bad tables ---------------------------------------------------------------
def edited(lut: Path, tmp: Path, edit) -> Path:
    data = json.loads(lut.read_text())
    edit(data)
    path = tmp / "edited.json"
    path.write_text(json.dumps(data))
    return path


def test_table_from_another_setup_is_refused(built, tmp_path, capsys):
    spec, lut = built
    other = edited(lut, tmp_path, lambda d: d["fingerprint"].update(threads=4, device="cpu: Other CPU (arm64)"))
    cost = LatencyCost({**FAST, "lut": str(other)})
    with pytest.raises(NascoreError, match="measured on another setup") as err:
        cost.price(nn.Identity(), (1, 8, 4, 4))
    assert "threads: table 4, here 1" in str(err.value) and "allow_other_fingerprint" in str(err.value)
    # the command line: exit 2, the message, no traceback
    assert main(["lut", "build", str(spec), "--out", str(other)]) == 2
    assert "threads: table 4, here 1" in capsys.readouterr().err


def test_table_from_another_setup_when_allowed(built, tmp_path):
    _, lut = built
    other = edited(lut, tmp_path, lambda d: d["fingerprint"].update(threads=4))
    cost = LatencyCost({**FAST, "lut": str(other), "allow_other_fingerprint": True})
    table = FBNetSpace(SPACE).supernet().price(cost, 32)
    reference = FBNetSpace(SPACE).supernet().price(LatencyCost({**FAST, "lut": str(lut)}), 32)
    assert table.fixed == reference.fixed
    assert all(torch.equal(table.options[k], reference.options[k]) for k in reference.options)
    # what it lacks cannot be measured here
    with pytest.raises(NascoreError, match="another setup and lacks 1 entries"):
        cost.price(nn.Conv2d(3, 5, 3), (1, 3, 8, 8))


def test_missing_entry_named_when_measuring_is_off(built):
    _, lut = built
    cost = LatencyCost({**FAST, "lut": str(lut), "measure_missing": False})
    conv = nn.Conv2d(3, 5, 3)
    with pytest.raises(NascoreError, match="lacks 1 entries and cost.measure_missing is false") as err:
        cost.price(conv, (1, 3, 8, 8))
    assert entry_key(op_key(conv), (1, 3, 8, 8)) in str(err.value) and "nascore lut build" in str(err.value)


def test_missing_entry_measured_on_demand_and_written_back(built, tmp_path):
    _, lut = built
    copy = tmp_path / "copy.json"
    copy.write_text(lut.read_text())
    conv = nn.Conv2d(3, 5, 3)
    LatencyCost({**FAST, "lut": str(copy)}).price(conv, (1, 3, 8, 8))
    assert entry_key(op_key(conv), (1, 3, 8, 8)) in load_table(copy).entries


@pytest.mark.parametrize("content, expected", [
    ('{"format": "nascore-latency-lut", "version": 1, "fingerp', "is not valid JSON: Unterminated string"),
    ("", "is not valid JSON"),
    ('{"hello": 1}', 'is not a nascore latency table (expected "format": "nascore-latency-lut")'),
    ('[1, 2]', "is not a nascore latency table"),
    ('{"format": "nascore-latency-lut", "version": 1, "fingerprint": {}, "entries": {"a @ 1": '
     '{"median_ms": -1, "p90_ms": 1, "runs": 1}}}', "entries.a @ 1.median_ms: Input should be greater than"),
    ('{"format": "nascore-latency-lut", "version": 7, "fingerprint": {}}', "version: Input should be 1"),
])
def test_corrupt_tables_get_clear_errors(tmp_path, capsys, content, expected):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(NascoreError, match="latency table .*bad.json") as err:
        load_table(bad)
    assert expected in str(err.value)
    # in a spec the field is named, at validation, with exit status 2 and no traceback
    spec = write_spec(tmp_path, bad)
    assert main(["validate", str(spec)]) == 2
    err_text = capsys.readouterr().err
    assert "cost.lut:" in err_text and expected in err_text and "Traceback" not in err_text
    assert bad.read_text() == content  # never rewritten


def test_missing_table_file_is_created_by_building(tmp_path):
    lut = tmp_path / "sub" / "new.json"
    cost = LatencyCost({**FAST, "lut": str(lut)})
    cost.price(nn.Conv2d(3, 4, 1), (1, 3, 4, 4))
    assert len(load_table(lut).entries) == 1


# -- backends ----------------------------------------------------------------------------------
def test_onnxruntime_backend_runs_the_exported_operation():
    block = make_block("k5_e1_g2", 8, 16, 2).eval()  # grouped convs and the channel shuffle
    shape = (1, 8, 12, 12)
    x = torch.randn(shape)
    backend = OnnxRuntimeBackend(threads=1)
    session = backend.session(block, shape)
    out = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, block(x).numpy(), rtol=1e-4, atol=1e-5)
    timing = backend.time(block, shape, 0.005)
    assert timing.median_ms > 0 and timing.runs >= 1


def test_onnxruntime_table_has_its_own_fingerprint(tmp_path):
    import onnxruntime

    lut = tmp_path / "ort.json"
    cost = LatencyCost({**FAST, "backend": "onnxruntime", "lut": str(lut)})
    cost.price(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), (1, 3, 16, 16))
    fp = load_table(lut).fingerprint
    assert fp["backend"] == "onnxruntime" and fp["onnxruntime"] == onnxruntime.__version__
    # a torch table is not an onnxruntime table
    with pytest.raises(NascoreError, match="backend: table 'onnxruntime', here 'torch'"):
        LatencyCost({**FAST, "lut": str(lut)}).price(nn.Identity(), (1, 3, 4, 4))


def test_onnxruntime_options_are_checked(tmp_path, capsys):
    spec = write_spec(tmp_path, tmp_path / "t.json", backend="onnxruntime", dtype="float16")
    assert main(["validate", str(spec)]) == 2
    assert "backend onnxruntime times float32" in capsys.readouterr().err


# -- in the search -----------------------------------------------------------------------------
def test_expected_latency_is_the_table_sum_and_differentiable(built):
    _, lut = built
    cost = LatencyCost({**FAST, "lut": str(lut), "measure_missing": False})
    space = FBNetSpace(SPACE)
    supernet = space.supernet()
    table = supernet.price(cost, 32)
    raw = load_table(lut)
    overhead = raw.overhead_ms
    decisions = supernet.decisions()
    ops = supernet.operations(32)
    rng = np.random.default_rng(0)
    for _ in range(3):
        choices = {d.name: d.options[rng.integers(len(d.options))] for d in decisions}
        picked = [op for op in ops if op.decision is None or choices[op.decision] == op.option]
        summed = sum(max(raw.entries[entry_key(op_key(op.module), op.input_shape)].median_ms - overhead, 0)
                     for op in picked) + overhead
        by_hand = raw.calibration.scale * summed
        assert table.expected(one_hot(decisions, choices)).item() == pytest.approx(by_hand, rel=1e-5)
        assert table.of_choices(choices) == pytest.approx(by_hand, rel=1e-6)  # float32 rows
    theta = {d.name: torch.zeros(len(d.options), requires_grad=True) for d in decisions}
    expected = table.expected({n: torch.softmax(t, 0) for n, t in theta.items()})
    expected.backward()
    grad = theta["layer05"].grad
    costs = table.options["layer05"]
    # d/dtheta of sum softmax(theta) * c at theta = 0 is (c - mean(c)) / n
    torch.testing.assert_close(grad, (costs - costs.mean()) / len(costs))


def test_overhead_counts_once_per_network(built):
    _, lut = built
    with_ = FBNetSpace(SPACE).supernet().price(LatencyCost({**FAST, "lut": str(lut)}), 32)
    without = FBNetSpace(SPACE).supernet().price(LatencyCost({**FAST, "lut": str(lut), "subtract_overhead": False}),
                                                 32)
    decisions = FBNetSpace(SPACE).decisions()
    choices = {d.name: "k3_e3" for d in decisions}
    raw = load_table(lut)
    parts = 1 + len(decisions)  # stem + 22 layers
    assert without.of_choices(choices) - with_.of_choices(choices) == \
        pytest.approx(raw.calibration.scale * (parts - 1) * raw.overhead_ms, rel=1e-5, abs=1e-9)


def test_calibration_fit_recovers_a_line_and_can_be_turned_off(built):
    fit = fit_calibration([1.0, 2.0, 4.0, 8.0, 3.0], [1.3, 2.6, 5.2, 10.4, 30.0])  # one outlier
    assert fit.scale == pytest.approx(1.3) and fit.archs == 5
    assert fit.error_after == pytest.approx(0, abs=1e-9) and fit.error_before == pytest.approx(0.3 / 1.3)
    with pytest.raises(NascoreError, match="at least 2 archs with positive estimates"):
        fit_calibration([2.0], [3.0])
    # the built table carries one, fitted on the spec's space; calibrated: false prices without it
    _, lut = built
    raw = load_table(lut)
    assert raw.calibration.archs == 8 and raw.calibration.scale > 0
    decisions = FBNetSpace(SPACE).decisions()
    choices = {d.name: "k5_e6" for d in decisions}
    on = FBNetSpace(SPACE).supernet().price(LatencyCost({**FAST, "lut": str(lut)}), 32)
    off = FBNetSpace(SPACE).supernet().price(LatencyCost({**FAST, "lut": str(lut), "calibrated": False}), 32)
    assert on.of_choices(choices) == pytest.approx(
        raw.calibration.scale * off.of_choices(choices), rel=1e-5)


def test_budget_loss_pushes_under_the_budget():
    """Gradient descent on the architecture logits alone, on a toy with known costs: the expected cost
    goes from above the target to at most the target, and below the target the penalty is flat."""
    costs = torch.tensor([1.0, 5.0, 10.0])  # ms
    budget = Budget(form="budget", target=4.0, **{"lambda": 2.0})
    theta = torch.tensor([0.0, 0.0, 3.0], requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.1)
    task_loss = torch.tensor(1.0)
    start = float((torch.softmax(theta.detach(), 0) * costs).sum())
    for _ in range(300):
        loss = budget(task_loss, (torch.softmax(theta, 0) * costs).sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = float((torch.softmax(theta.detach(), 0) * costs).sum())
    assert start > 8 and end <= 4.0 + 0.05
    # under the target: no gradient from the cost
    cost = torch.tensor(3.0, requires_grad=True)
    budget(task_loss, cost).backward()
    assert cost.grad.item() == 0.0
    over = torch.tensor(6.0, requires_grad=True)
    budget(task_loss, over).backward()
    assert over.grad.item() == pytest.approx(2.0 / 4.0)


def test_unreachable_budget_and_useless_scale_are_reported(tmp_path, capsys):
    assert "no arch can meet it" in Budget(form="budget", target=1.0).check_bounds(2.0, 9.0, "ms")
    assert Budget(form="budget", target=3.0).check_bounds(2.0, 9.0, "ms") is None
    message = Multiplicative().check_bounds(0.3, 2.0, "ms")
    assert "cost.loss.scale" in message and "0.03" in message
    assert Multiplicative(scale=0.01).check_bounds(0.3, 2.0, "ms") is None
    # a run that fails on it leaves no run directory behind
    spec = write_spec(tmp_path, tmp_path / "lut.json")
    data = yaml.safe_load(spec.read_text())
    data["cost"] = {"name": "flops", "loss": {"form": "budget", "target": 10}}
    spec.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(out)]) == 2
    assert "cost.loss.target: 10 MACs is below the cheapest arch" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_search_with_latency_budget_runs(built, tmp_path):
    spec, lut = built
    from nascore.spec import load_spec

    data = yaml.safe_load(spec.read_text())
    data["cost"]["lut"] = str(lut)
    data["cost"]["measure_missing"] = False
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(data))
    # a target between the cheapest and the dearest arch as this machine's table prices them
    run_spec = load_spec(path)
    space = run_spec.space.create()
    low, high = space.supernet().price(run_spec.cost.create(), space.input_size, 3).bounds()
    data["cost"]["loss"] = {"form": "budget", "target": (low + high) / 2}
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["expected_cost"] > 0 and rows[-1]["derived_cost"] > 0


# -- nascore measure ---------------------------------------------------------------------------
def test_measure_prints_latency_and_estimate(tmp_path, capsys):
    lut = tmp_path / "m.json"
    assert main(["measure", "fbnet_a", "--input-size", "32", "--min-run-time", "0.05", "--lut", str(lut)]) == 0
    out = capsys.readouterr().out
    assert "measured median" in out and "measured p90" in out and "lookup-table estimate" in out
    table = load_table(lut)
    arch = FBNetSpace.named_archs()["fbnet_a"]
    ops = [op for op in FBNetSpace.for_arch(arch, input_size=32).supernet().operations(32)
           if op.decision is None or arch.choices[op.decision] == op.option]
    assert set(table.entries) == {entry_key(op_key(op.module), op.input_shape) for op in ops}  # nothing else
    # again: the estimate comes from the table, nothing new is measured
    assert main(["measure", "fbnet_a", "--input-size", "32", "--min-run-time", "0.05", "--lut", str(lut)]) == 0
    assert load_table(lut).entries == table.entries


def test_lut_build_bad_calibrate(built, capsys):
    assert main(["lut", "build", str(built[0]), "--calibrate", "1"]) == 2
    assert "--calibrate must be 0 or at least 2 archs, not 1" in capsys.readouterr().err


@pytest.mark.parametrize("args, expected", [
    (["--batch", "0"], "--batch: Input should be greater than or equal to 1"),
    (["--threads", "0"], "--threads: Input should be greater than or equal to 1"),
    (["--device", "gpu7"], "--device: 'gpu7' is not a torch device"),
    (["--input-size", "0"], "--input-size must be a positive number"),
    (["--min-run-time", "0"], "--min-run-time must be positive"),
])
def test_measure_bad_options(capsys, args, expected):
    assert main(["measure", "fbnet_a", *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err

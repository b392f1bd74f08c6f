"""The ``tensorboard`` observer (``log: [tensorboard]``): a tiny run writes TensorBoard event files holding every
numeric metrics value per phase and epoch; a spec asking for it without the tensorboard package is refused (exit 2);
runs without it write none."""
from __future__ import annotations

import json

import pytest
import yaml

from nascore.cli import main
from nascore.observers import tensorboard as observer
from tiny import FLOPS, REINFORCE, dnas_spec, search

TASKS = [{"name": "classification"}]


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_a_run_with_log_tensorboard_writes_every_metric(tmp_path):
    if not observer.available():
        pytest.skip("the tensorboard package is not installed (pip install 'nascore[tensorboard]')")
    run = search(tmp_path, TASKS, REINFORCE, cost=FLOPS, pareto={"samples": 0}, log=["tensorboard"])
    assert yaml.safe_load((run / "spec.yaml").read_text())["log"] == ["tensorboard"]
    logged = scalars(run / "tensorboard")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = {f"{r['phase']}/{k}" for r in rows for k, v in r.items()
                if isinstance(v, (int, float)) and k not in ("phase", "epoch")}
    assert expected and expected <= set(logged)
    for r in rows:
        for k, v in r.items():
            if isinstance(v, (int, float)) and k not in ("phase", "epoch"):
                assert (r["epoch"], pytest.approx(v, rel=1e-6)) in logged[f"{r['phase']}/{k}"]
    assert "summary/classification/search/val/classification/top1" in logged  # the per-task arch's results


@pytest.mark.slow
def test_a_run_without_log_writes_no_event_files(tmp_path):
    run = search(tmp_path, TASKS, REINFORCE, cost=FLOPS, pareto={"samples": 0})
    assert not (run / "tensorboard").exists()
    assert "log" not in yaml.safe_load((run / "spec.yaml").read_text())  # the resolved spec leaves an empty log out


def test_log_tensorboard_without_the_package_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(observer, "available", lambda: False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**dnas_spec(tmp_path / "cache"), "log": ["tensorboard"]}))
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "log: 'tensorboard' needs the tensorboard package" in err and "nascore[tensorboard]" in err
    assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


def test_an_unknown_logger_is_a_spec_error(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**dnas_spec(tmp_path / "cache"), "log": ["wandb"]}))
    assert main(["validate", str(spec)]) == 2
    assert "log" in capsys.readouterr().err

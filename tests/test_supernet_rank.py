"""One-shot supernet training rules and ``nascore bench supernet-rank``: what each rule draws, BatchNorm
recalibration, the ranking of a tiny collection, resuming, and refusals."""
from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from nascore.cli import main
from nascore.loops import recalibrate_batchnorm
from nascore.performance.oneshot import OneShot, PathSampler, extremes
from nascore.performance.predictors.scoring import scores
from nascore.spaces.fbnet import FBNetSpace
from nascore.supernet import Decision
from test_predictors import tiny_spec
from workspace import snapshot

DECISIONS = [Decision("a", ("x", "y", "z")), Decision("b", ("p", "q")), Decision("c", ("only",))]


def test_uniform_draws_one_path_per_step():
    sampler = PathSampler(DECISIONS, OneShot(rule="uniform"), random.Random(0))
    steps = [sampler.step() for _ in range(300)]
    assert all(len(s) == 1 for s in steps)
    seen = {o for s in steps for o in (s[0]["a"], s[0]["b"])}
    assert seen == {"x", "y", "z", "p", "q"}


def test_fair_trains_every_option_of_every_decision_once_per_step():
    sampler = PathSampler(DECISIONS, OneShot(rule="fair"), random.Random(1))
    for _ in range(20):
        paths = sampler.step()
        assert len(paths) == 3  # the largest decision's option count
        assert sorted(p["a"] for p in paths) == ["x", "y", "z"]
        assert {p["b"] for p in paths} == {"p", "q"} and all(p["c"] == "only" for p in paths)


def test_sandwich_is_the_largest_the_smallest_and_random_paths():
    space = FBNetSpace({"width": 0.25, "input_size": 32, "head_channels": 64})
    supernet = space.supernet()
    largest, smallest = extremes(supernet, 32, 3)
    assert set(largest.values()) == {"k5_e6"}
    assert "k5_e6" not in smallest.values() and "skip" in smallest.values()
    sampler = PathSampler(supernet.decisions(), OneShot(rule="sandwich", paths=3), random.Random(0), largest, smallest)
    paths = sampler.step()
    assert len(paths) == 5 and paths[0] == largest and paths[1] == smallest


def test_recalibration_changes_batchnorm_statistics_and_nothing_else():
    space = FBNetSpace({"width": 0.25, "input_size": 32, "head_channels": 64, "shared_weights": True})
    supernet = space.supernet()
    supernet.set_choices({d.name: "k3_e3" for d in space.decisions()})
    params = {k: v.clone() for k, v in supernet.named_parameters()}
    buffers = {k: v.clone() for k, v in supernet.named_buffers()}
    images = [(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(i)), None) for i in range(2)]
    recalibrate_batchnorm(supernet.eval(), images, torch.device("cpu"))
    assert not supernet.training
    assert all(torch.equal(v, params[k]) for k, v in supernet.named_parameters())
    changed = [k for k, v in supernet.named_buffers() if not torch.equal(v, buffers[k])]
    assert changed and all(k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
                           for k in changed)
    # the path's statistics are those of its own batches: a layer's expansion channels the path does not use keep
    # their reset values
    layer = supernet.layers[2].shared
    used = layer.mid(3)
    assert torch.all(layer.pw_bn.running_mean[used:] == 0) and not torch.all(layer.pw_bn.running_mean[:used] == 0)


@pytest.fixture(scope="module")
def collection(tmp_path_factory, cache_dir) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rank")
    spec = root / "spec.yaml"
    data = tiny_spec(cache_dir)
    data["tasks"] = data["tasks"][:1]
    spec.write_text(yaml.safe_dump(data))
    assert main(["bench", "collect", str(spec), "--archs", "4", "--out", str(root / "data")]) == 0
    return spec, root / "data"


def test_ranks_a_collection_and_resumes_without_scoring_again(collection, tmp_path, capsys):
    spec, data = collection
    out = tmp_path / "rank"
    args = ["bench", "supernet-rank", str(spec), str(data), "--out", str(out), "--rule", "fair"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    ranking = json.loads((out / "ranking.json").read_text())
    assert ranking["label"] == "val/classification/top1" and ranking["options"]["rule"]["rule"] == "fair"
    assert set(ranking["correlations"]) >= {"supernet", "macs", "params", "naswot"}
    assert all(c["n"] == 4 for c in ranking["correlations"].values())
    assert "supernet" in printed and "naswot" in printed
    files = sorted((out / "scores").iterdir())
    assert [p.name for p in files] == [f"{i:05d}.json" for i in range(4)]
    assert all(0 <= json.loads(p.read_text())["score"] <= 1 for p in files)
    # the supernet's score plus NASWOT, each standardised over the archs (oneshot's proxy), ranked as the labels
    supernet = [json.loads(p.read_text())["score"] for p in files]
    records = [json.loads(p.read_text()) for p in sorted((data / "archs").iterdir())]
    proxy = [r["proxies"]["naswot"] for r in records]
    z = [(torch.tensor(v, dtype=torch.float64) - statistics.fmean(v)) / (statistics.pstdev(v) or 1.0)
         for v in (supernet, proxy)]
    labels = [r["tasks"]["classification"]["label"] for r in records]
    summed, want = ranking["correlations"]["supernet+naswot"], scores((z[0] + z[1]).tolist(), labels)
    assert summed["n"] == 4 and summed["spearman"] == (None if want["spearman"] is None else
                                                       pytest.approx(want["spearman"]))
    before = snapshot(out / "scores")
    assert main(args) == 0
    assert snapshot(out / "scores") == before
    assert json.loads((out / "ranking.json").read_text())["correlations"] == ranking["correlations"]


@pytest.mark.parametrize("override, field", [
    ("space.width=0.5", "space.config.width"),
    ("dataset.num_val=24", "spec.dataset"),
    ("tasks.0.name=saliency", "no labels of task 'saliency'"),
    ("space.candidates=[k3_e3]", "not an option of the spec's space (k3_e3)"),
])
def test_a_dataset_of_other_archs_is_refused_and_nothing_written(collection, tmp_path, capsys, override, field):
    spec, data = collection
    if override.startswith("tasks"):
        changed = yaml.safe_load(spec.read_text())
        changed["tasks"] = [{"name": "saliency", "channels": 8}]
        spec = tmp_path / "other.yaml"
        spec.write_text(yaml.safe_dump(changed))
        args = []
    else:
        args = ["--set", override]
    out = tmp_path / "rank"
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err
    assert not out.exists()


def test_a_supernet_of_another_spec_is_refused(collection, tmp_path, capsys):
    spec, data = collection
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(tmp_path / "a"), "--first", "1"]) == 0
    capsys.readouterr()
    out = tmp_path / "b"
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(out), "--rule", "fair",
                 "--supernet", str(tmp_path / "a" / "supernet.pt")]) == 2
    err = capsys.readouterr().err
    assert "--supernet" in err and "supernet.pt" in err and "Traceback" not in err
    assert not out.exists()


def test_bad_options_name_their_flag(collection, tmp_path, capsys):
    spec, data = collection
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(tmp_path / "x"), "--bn-batches",
                 "0"]) == 2
    assert "--bn-batches" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_module_without_batchnorm_is_left_alone():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    before = [p.clone() for p in net.parameters()]
    recalibrate_batchnorm(net, [(torch.randn(2, 3, 8, 8), None)], torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), before))


def test_the_sandwich_of_fbnetv2_is_its_widest_and_its_narrowest_path():
    from nascore.spaces.fbnetv2 import FBNetV2Space

    space = FBNetV2Space({"input_size": 32, "stem": 8, "head_channels": 64, "stages": [
        {"channels": [8, 16], "blocks": 1, "stride": 2, "types": ["k3", "k5", "skip"]}]})
    largest, smallest = extremes(space.supernet(), 32, 3)
    assert largest["s1.channels"] == "16" and largest["s1.b1.type"] == "k5"
    assert smallest["s1.channels"] == "8" and smallest["s1.b1.type"] == "skip"


def test_the_training_benchmark_runs_at_its_smallest(tmp_path):
    """benchmarks/supernet_training.py, whose numbers BENCHMARKS.md quotes, on a few images (a refactor that breaks
    it fails here)."""
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "benchmarks" / "supernet_training.py"
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(script), "--epochs", "1", "--seeds", "0", "--only", "twins", "fair",
                           "shared-sandwich-unit-scale", "shared-pure-e1", "shared-fair-e1-e3-untied",
                           "shared-progressive", "shared-fair-nine", "--set", "dataset.num_train=64", "--set",
                           "dataset.num_val=16", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert [r["experiment"] for r in rows] == ["twins", "fair", "shared-sandwich-unit-scale", "shared-pure-e1",
                                               "shared-fair-e1-e3-untied", "shared-progressive", "shared-fair-nine"]
    assert all(len(r["loss"]) == 1 for r in rows) and "copy_gap_first_mid_last" in rows[0]
    assert "largest_path_loss" in rows[2]


def test_a_bad_score_file_stops_the_command_before_the_supernet_trains(collection, tmp_path, capsys):
    spec, data = collection
    out = tmp_path / "rank"
    (out / "scores").mkdir(parents=True)
    (out / "scores" / "00001.json").write_text('{"format": "something else"}')
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "00001.json is not a supernet score" in err and "Traceback" not in err
    assert not (out / "supernet.pt").exists()


def test_scores_of_another_supernet_are_not_reused(collection, tmp_path, capsys):
    spec, data = collection
    out = tmp_path / "rank"
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(out), "--first", "1"]) == 0
    (out / "supernet.pt").unlink()  # as if the user removed the supernet to train another in the same folder
    capsys.readouterr()
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(out), "--first", "1", "--epochs",
                 "2"]) == 2
    assert "scored on another supernet" in capsys.readouterr().err
    assert not (out / "supernet.pt").exists()


def test_the_cli_offers_every_one_shot_rule():
    """`nascore bench`'s parser spells the rules out (it loads no torch): they are the rules OneShot accepts."""
    import argparse

    from nascore.cli import _parser
    from nascore.performance.oneshot import RULES

    def sub(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]

    bench = sub(_parser(), "bench")
    for command in ("pseudo-label", "supernet-rank"):
        rule = next(a for a in sub(bench, command)._actions if "--rule" in a.option_strings)
        assert tuple(rule.choices) == RULES, command

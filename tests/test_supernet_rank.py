"""One-shot supernet training rules and ``nascore bench supernet-rank``: what each rule draws, BatchNorm
recalibration, the ranking of a tiny collection, resuming, and refusals."""
from __future__ import annotations

import itertools
import json
import random
import shutil
import statistics
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from nascore.cli import main
from nascore.fileio import load_checkpoint
from nascore.loops import recalibrate_batchnorm
from nascore.parts import Parts
from nascore.performance.oneshot import OneShot, PathSampler, batches, distillation, extremes, oneshot_step
from nascore.performance.predictors.scoring import scores
from nascore.performance.ranking import BN_STREAM
from nascore.spaces.fbnet import FBNetSpace
from nascore.spec import load_spec
from nascore.supernet import Decision
from nascore.task import build_network
from nascore.train import validate
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


def test_mixture_draws_a_gumbel_softmax_mix_of_every_option_per_step():
    def draws(temperature: float) -> list[dict[str, torch.Tensor]]:
        sampler = PathSampler(DECISIONS, OneShot(rule="mixture", temperature=temperature), random.Random(0))
        return [step[0] for step in (sampler.step() for _ in range(50))]

    warm, cold = draws(5.0), draws(0.05)
    for mix in warm + cold:
        assert {k: len(v) for k, v in mix.items()} == {"a": 3, "b": 2, "c": 1}
        assert all(torch.all(v >= 0) and float(v.sum()) == pytest.approx(1.0) for v in mix.values())
    assert not torch.equal(warm[0]["a"], warm[1]["a"])  # a new draw every step
    # hot: near uniform; cold: near one option, each option the largest about as often
    assert min(float(m["a"].min()) for m in warm) > 0.1
    assert statistics.mean(float(m["a"].max()) for m in cold) > 0.95
    assert {int(m["a"].argmax()) for m in cold} == {0, 1, 2}


class _Classifier(nn.Module):
    """A supernet with a linear class head: the network ``oneshot_step`` trains (its one task is itself)."""

    name = "c"

    def __init__(self, supernet: nn.Module):
        super().__init__()
        self.supernet, self.head = supernet, nn.LazyLinear(3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"c": self.head(self.supernet(x)[-1].mean((2, 3)))}

    @staticmethod
    def loss(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, targets)


@pytest.mark.parametrize("rule", ["mixture", "uniform"])
def test_a_mixture_step_trains_every_candidate_a_single_path_its_own(rule):
    torch.manual_seed(0)
    supernet = FBNetSpace({"width": 0.25, "input_size": 32, "head_channels": 64}).supernet()
    network = _Classifier(supernet)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 3, (4,))
    supernet.set_choices({d.name: d.options[0] for d in supernet.decisions()})
    network(x)  # the head's shape
    draw = PathSampler(supernet.decisions(), OneShot(rule=rule), random.Random(0)).step()
    oneshot_step(network, supernet, network, draw, x, y, torch.optim.SGD(network.parameters(), lr=0.0),
                 OneShot(rule=rule), 0, 0)
    for op in supernet.mixed_ops():
        weighted = {name for name, c in op.candidates.items() if any(True for _ in c.parameters())}
        moved = {name for name, c in op.candidates.items()
                 if any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in c.parameters())}
        assert moved == (weighted if rule == "mixture" else weighted & {draw[0][op.decision]}), op.decision


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


def path_metrics(spec_file: Path, out: Path, choices: dict[str, str], bn_batches: int, recalibrate: bool = True
                 ) -> dict[str, float]:
    """The arch ``choices`` evaluated on the supernet ``out/supernet.pt`` holds, as the ranking should score it: its
    path, BatchNorm re-estimated on its own ``bn_batches`` batches (or not), the val split."""
    spec = load_spec(spec_file)
    parts = Parts.build(spec)
    checkpoint = load_checkpoint(out / "supernet.pt")
    tasks = parts.tasks if "adopted" in checkpoint else parts.tasks[:1]
    network = build_network(parts.space.supernet(), tasks, parts.info)
    network.load_state_dict(checkpoint["state"]["network"])
    network.backbone.set_choices(choices)
    if recalibrate:
        recalibrate_batchnorm(network, itertools.islice(batches(parts, spec.train, 0, BN_STREAM), bn_batches),
                              parts.device)
    network.eval()
    return validate(network, parts.val_set, parts.collate, parts.tasks[:1], spec.train, parts.device)


def test_each_arch_is_scored_on_its_own_path_with_its_own_batchnorm_statistics(collection, tmp_path):
    """The numbers on a tiny dataset: every score is its arch's path on the shared weights, BatchNorm re-estimated
    on that path (not the statistics training left); the supernet's Spearman and Kendall are those of the scores
    against the labels; scoring in two worker processes gives the same scores."""
    spec, data = collection
    out = tmp_path / "rank"
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(out), "--bn-batches", "2"]) == 0
    files = sorted((out / "scores").iterdir())
    saved = [json.loads(p.read_text()) for p in files]
    records = [json.loads(p.read_text()) for p in sorted((data / "archs").iterdir())]
    unchanged = 0
    for score, record in zip(saved, records, strict=True):
        assert score["choices"] == record["arch"]["choices"]
        assert score["metrics"] == pytest.approx(path_metrics(spec, out, score["choices"], 2), abs=1e-6)
        unchanged += score["metrics"] == pytest.approx(path_metrics(spec, out, score["choices"], 2, False), abs=1e-6)
    assert unchanged < len(saved)  # the training's running statistics would have scored them otherwise
    assert len({s["metrics"]["val/classification/loss"] for s in saved}) == len(saved)  # four paths, four scores
    labels = [r["tasks"]["classification"]["label"] for r in records]
    want = scores([s["score"] for s in saved], labels)
    got = json.loads((out / "ranking.json").read_text())["correlations"]["supernet"]
    assert got["n"] == 4
    for key in ("spearman", "kendall"):
        assert got[key] == (None if want[key] is None else pytest.approx(want[key]))
    parallel = tmp_path / "parallel"
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(parallel), "--bn-batches", "2",
                 "--workers", "2", "--supernet", str(out / "supernet.pt")]) == 0
    again = [json.loads(p.read_text()) for p in sorted((parallel / "scores").iterdir())]
    assert [s["index"] for s in again] == [s["index"] for s in saved]
    for mine, theirs in zip(again, saved, strict=True):  # worker processes may run other thread counts
        assert mine["metrics"] == pytest.approx(theirs["metrics"], abs=1e-5)


def test_the_labels_agreement_with_another_training_seed_is_printed_as_the_ceiling(collection, tmp_path, capsys):
    """``--labels-again``: the same archs trained with another seed; their labels' Spearman and Kendall against the
    dataset's are a ranker of the table. Archs of another plan, or trained with another spec, are refused."""
    spec, data = collection
    again = tmp_path / "again"
    assert main(["bench", "collect", str(spec), "--archs", "4", "--seed", "0", "--set", "seed=1",
                 "--out", str(again)]) == 0
    out = tmp_path / "rank"
    capsys.readouterr()
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(out), "--labels-again",
                 str(again)]) == 0
    assert "labels, another seed" in capsys.readouterr().out

    def labels(folder: Path) -> list[float]:
        return [json.loads(p.read_text())["tasks"]["classification"]["label"]
                for p in sorted((folder / "archs").iterdir())]

    want, got = scores(labels(again), labels(data)), json.loads((out / "ranking.json").read_text())
    assert got["labels_again"] == str(again) and got["correlations"]["labels, another seed"]["n"] == 4
    for key in ("spearman", "kendall"):
        assert got["correlations"]["labels, another seed"][key] == \
            (None if want[key] is None else pytest.approx(want[key]))
    for name, flags, field in (("lr", ["--seed", "0", "--set", "train.lr=0.2"], "train.lr: 0.05, now 0.2"),
                               ("plan", ["--seed", "7"], "is not the dataset's arch of that index")):
        other = tmp_path / name
        assert main(["bench", "collect", str(spec), "--archs", "1", *flags, "--out", str(other)]) == 0
        capsys.readouterr()
        assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(tmp_path / "x"),
                     "--labels-again", str(other)]) == 2
        err = capsys.readouterr().err
        assert "--labels-again" in err and field in err and "Traceback" not in err
        assert not (tmp_path / "x").exists()


def test_ranks_on_the_supernet_a_oneshot_run_kept(collection, tmp_path, capsys):
    """``--supernet`` with the supernet file of a ``oneshot`` run of the spec's data: nothing trains, every arch is
    scored on that file's weights; a file of another space is refused, the field named, nothing written."""
    spec, data = collection
    run = yaml.safe_load(spec.read_text())
    run["strategy"] = {"name": "oneshot", "supernet": {"epochs": 1, "batch_size": 16, "lr": 0.05}, "population": 2,
                       "cycles": 1, "sample_size": 2, "top_k": 1, "bn_batches": 1,
                       "train": {"epochs": 1, "batch_size": 16, "lr": 0.05}}
    run["cost"] = {"name": "flops", "loss": {"form": "budget", "target": 1.5e6}}
    run_spec = tmp_path / "oneshot.yaml"
    run_spec.write_text(yaml.safe_dump(run))
    assert main(["run", str(run_spec), "--out", str(tmp_path / "run"), "--set", "train=null"]) == 0
    kept = tmp_path / "run" / "supernet.pt"
    out = tmp_path / "rank"
    capsys.readouterr()
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(out), "--supernet", str(kept)]) == 0
    assert f"taken from {kept}" in capsys.readouterr().out
    ranking = json.loads((out / "ranking.json").read_text())
    assert ranking["supernet"] == str(kept) and ranking["supernet_seconds"] is None
    state = load_checkpoint(kept)["network"]
    assert all(torch.equal(v, state[k]) for k, v in load_checkpoint(out / "supernet.pt")["state"]["network"].items())
    for p in sorted((out / "scores").iterdir()):
        score = json.loads(p.read_text())
        assert score["supernet"].startswith("file-")
        assert score["metrics"] == pytest.approx(path_metrics(spec, out, score["choices"], 8), abs=1e-6)
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(tmp_path / "x"), "--supernet",
                 str(out / "supernet.pt")]) == 2
    assert f"is a copy of {kept}'s supernet; pass that file" in capsys.readouterr().err
    other = load_checkpoint(kept)
    other["identity"]["space"]["width"] = 0.5
    torch.save(other, tmp_path / "other.pt")
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(tmp_path / "x"), "--supernet",
                 str(tmp_path / "other.pt")]) == 2
    err = capsys.readouterr().err
    assert "space.width = 0.5" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_ranks_on_the_supernet_a_dnas_search_left(collection, tmp_path, capsys):
    """``--supernet RUN/checkpoints/search.pt``: the supernet a DNAS search decided on, checked against the run's
    spec.yaml; the checkpoint away from its run is refused, saying what is expected."""
    spec, data = collection
    assert main(["run", str(spec), "--out", str(tmp_path / "run"), "--set", "strategy.epochs=2",
                 "--set", "strategy.warmup_epochs=1", "--set", "strategy.batch_size=16", "--set", "train=null",
                 "--set", "pareto.samples=0"]) == 0
    search = tmp_path / "run" / "checkpoints" / "search.pt"
    out = tmp_path / "rank"
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(out), "--supernet", str(search)]) == 0
    state = load_checkpoint(search)["state"]["network"]
    assert all(torch.equal(v, state[k]) for k, v in load_checkpoint(out / "supernet.pt")["state"]["network"].items())
    for p in sorted((out / "scores").iterdir()):
        score = json.loads(p.read_text())
        assert score["metrics"] == pytest.approx(path_metrics(spec, out, score["choices"], 8), abs=1e-6)
    moved = tmp_path / "elsewhere" / "search.pt"
    moved.parent.mkdir()
    shutil.copy(search, moved)
    capsys.readouterr()
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(tmp_path / "x"), "--supernet",
                 str(moved)]) == 2
    err = capsys.readouterr().err
    assert "a run's checkpoints/search.pt (its spec.yaml two folders up)" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("override, field", [
    ("space.width=0.5", "space.config.width"),
    ("dataset.num_val=24", "spec.dataset"),
    ("tasks.0.name=saliency", "no labels of task 'saliency'"),
    ("space.candidates=[k3_e3]", "not an option of the spec's space (k3_e3)"),
    ("space.input_size=64", "space.config.input_size is 32, the spec's space.input_size is 64"),
    ("dataset.image_size=64", "input_size 32 x 3 channels, the spec's data 64 x 3"),
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


def test_a_dataset_cached_in_another_folder_is_the_same_data(collection, tmp_path):
    spec, data = collection
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(tmp_path / "rank"), "--first", "1",
                 "--set", f"dataset.cache_dir={tmp_path / 'elsewhere'}"]) == 0


def test_a_dataset_of_another_space_is_refused_and_nothing_written(collection, tmp_path, capsys):
    spec, data = collection
    other = tmp_path / "data"
    shutil.copytree(data, other)
    manifest = json.loads((other / "dataset.json").read_text())
    manifest["space"]["name"] = "fbnetv2"
    (other / "dataset.json").write_text(json.dumps(manifest))
    out = tmp_path / "rank"
    assert main(["bench", "supernet-rank", str(spec), str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "space 'fbnetv2' is not the spec's space 'fbnet'" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("args, field", [
    (["--rule", "fair"], "rule.rule: 'uniform', now 'fair' (--rule)"),
    (["--epochs", "2"], "epochs: 1, now 2 (--epochs)"),
    (["--set", "train.lr=0.2"], "train.lr: 0.05, now 0.2 (the spec's train.lr)"),
    (["--set", "seed=3"], "seed: 0, now 3 (the spec's seed)"),
])
def test_a_supernet_of_another_spec_is_refused_the_field_named(collection, tmp_path_factory, tmp_path, capsys, args,
                                                               field):
    spec, data = collection
    trained = tmp_path_factory.getbasetemp() / "rank-one-epoch"
    if not (trained / "ranking.json").exists():
        assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(trained), "--first", "1"]) == 0
    capsys.readouterr()
    out = tmp_path / "b"
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(out), *args,
                 "--supernet", str(trained / "supernet.pt")]) == 2
    err = capsys.readouterr().err
    assert f"--supernet {trained / 'supernet.pt'} was trained for other options: {field}" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_bad_options_name_their_flag(collection, tmp_path, capsys):
    spec, data = collection
    assert main(["bench", "supernet-rank", str(spec), str(data), "--out", str(tmp_path / "x"), "--bn-batches",
                 "0"]) == 2
    assert "--bn-batches" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


class _Scaled(nn.Module):
    """A stand-in supernet and network: a linear classifier whose path ("x1", "x3") scales its logits."""

    name = "c"

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.scale = 1.0

    def set_choices(self, choices: dict[str, str]) -> None:
        self.scale = float(choices["s"][1:])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"c": self.linear(x) * self.scale}

    @staticmethod
    def loss(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, targets)


@pytest.mark.parametrize("distill", [True, False])
def test_sandwich_paths_learn_from_the_largest_paths_output_or_the_labels(distill):
    """In-place distillation: with it, every path after the first (the largest) learns the first's output on the
    batch (KL to its softmax, the teacher not trained through), without it the labels; gradients summed."""
    torch.manual_seed(0)
    net, x, y = _Scaled(), torch.randn(8, 4), torch.randint(0, 3, (8,))
    paths = [{"s": "x3"}, {"s": "x1"}]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    first = oneshot_step(net, net, net, paths, x, y, optimizer, OneShot(rule="sandwich", distill=distill), 0, 0)
    got = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    teacher = net.linear(x) * 3
    student = net.linear(x)
    second = F.kl_div(F.log_softmax(student, 1), F.softmax(teacher.detach(), 1), reduction="batchmean") \
        if distill else F.cross_entropy(student, y)
    (F.cross_entropy(teacher, y) + second).backward()
    assert first == pytest.approx(F.cross_entropy(teacher, y).item())
    assert all(torch.allclose(g, p.grad, atol=1e-6) for g, p in zip(got, net.parameters(), strict=True))


def test_distillation_is_kl_for_class_logits_and_squared_error_for_dense_outputs():
    logits = torch.randn(5, 4)
    assert distillation(logits, logits).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(5, 4)
    assert distillation(logits, other).item() == pytest.approx(
        F.kl_div(F.log_softmax(logits, 1), F.softmax(other, 1), reduction="batchmean").item())
    dense, target = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    assert distillation(dense, target).item() == pytest.approx(F.mse_loss(dense, target).item())


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

"""AIO-P K-Adapters and transfer (``aio-p-adapters``, ``nascore predictor adapt | transfer``) on tiny synthetic
performance datasets: what each step freezes, the mean over heads, the state in a predictor file, the CLI flow and
refused inputs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nascore.cli import main
from nascore.performance.graph import build_graph, graph_record
from nascore.performance.perfdata import Manifest, PerfDataset, Record, write_manifest, write_record
from nascore.performance.predictors.adapters import AdaptedPredictor, adapt_file
from nascore.performance.predictors.aiop import AIOPPredictor
from nascore.performance.predictors.file import PredictorFile
from nascore.performance.predictors.fitting import baseline_names, fit_file
from nascore.performance.predictors.samples import labelled_samples
from nascore.registry import get_registry
from workspace import snapshot

FAST = {"adapter_epochs": 3, "fine_tune_epochs": 2, "adapter_batch_size": 8, "fine_tune_batch_size": 4,
        "adapter_lr": 1e-2, "fine_tune_lr": 1e-2}


def _arch(n: int, k: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(n):
        layers += [nn.Conv2d(4, 4, k, padding=k // 2), nn.ReLU()]
    return nn.Sequential(nn.Conv2d(3, 4, 1), *layers, nn.AdaptiveAvgPool2d(1))


def write_dataset(out: Path, space: str, labels: dict[str, callable], input_size: int = 8) -> Path:
    """24 archs (1-12 convs of kernel 1 or 3) with a label per task from ``labels[task](n, k)``."""
    archs = [(n, k) for n in range(1, 13) for k in (1, 3)]
    manifest = Manifest(format="nascore-performance-dataset", version=1, seed=0, archs=len(archs),
                        space={"name": space, "config": {}}, input_size=input_size, in_channels=3,
                        tasks={t: {"label": f"val/{t}/score", "higher_is_better": True} for t in labels},
                        spec={"dataset": {"name": "digit-scenes"}},
                        plan=[{"index": i, "choices": {"n": str(n), "k": str(k)}} for i, (n, k) in enumerate(archs)])
    out.mkdir(parents=True)
    write_manifest(out, manifest)
    for i, (n, k) in enumerate(archs):
        graph = graph_record(build_graph(_arch(n, k), input_size))
        write_record(out, Record(
            format="nascore-performance-record", version=1, index=i,
            arch={"space": space, "config": {}, "choices": {"n": str(n), "k": str(k)}},
            macs=10**5 * n * k, params=100 * n * k, proxies={"synflow": float(n), "naswot": float(k)}, graph=graph,
            tasks={t: {"metrics": {f"val/{t}/score": f(n, k)}, "label": f(n, k), "seconds": 1.0}
                   for t, f in labels.items()}))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """A source (space s1: tasks a and b), a target (space s2: task a) and one at another input size; an aio-p
    base fitted on the source's task a."""
    root = tmp_path_factory.mktemp("transfer")
    out = {"source": write_dataset(root / "source", "s1", {"a": lambda n, k: 0.5 + 0.03 * n + 0.01 * k,
                                                           "b": lambda n, k: 0.9 - 0.02 * n * (k == 3)}),
           "target": write_dataset(root / "target", "s2", {"a": lambda n, k: 0.4 + 0.02 * n + 0.03 * k}),
           "big": write_dataset(root / "big", "s2", {"a": lambda n, k: 0.4 + 0.02 * n}, input_size=16)}
    file = fit_file([PerfDataset.read(out["source"])], "aio-p", {"epochs": 5, "lr": 1e-2})
    file.tasks = {"a": file.tasks["a"]}
    file.save(root / "base.pt")
    out["base"] = root / "base.pt"
    return out


def _samples(path: Path, task: str = "a"):
    return labelled_samples(PerfDataset.read(path), task)


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _adapted(data, k: int) -> AdaptedPredictor:
    """The base with ``k`` adapters trained on the source's task b."""
    p = AdaptedPredictor.of(PredictorFile.load(data["base"]).tasks["a"].predictor, FAST)
    for seed in range(k):
        p.adapt(_samples(data["source"], "b"), torch.Generator().manual_seed(seed), {"task": "b"})
    return p


def test_adapt_trains_a_new_adapter_with_the_base_and_earlier_adapters_frozen(data):
    base = PredictorFile.load(data["base"])
    before = _params(base.tasks["a"].predictor.network)
    one = adapt_file(base, "base.pt", [PerfDataset.read(data["source"])], task="b", overrides=FAST)
    p = one.tasks["a"].predictor
    assert isinstance(p, AdaptedPredictor) and len(p.adapters) == 1 and p.sources[0]["task"] == "b"
    assert _same(_params(p.base.network), before), "the base is bit-identical after adapt"
    assert (p.base.mean, p.base.std) == (base.tasks["a"].predictor.mean, base.tasks["a"].predictor.std)
    first = _params(p.adapters[0])
    two = adapt_file(one, "one.pt", [PerfDataset.read(data["target"])], overrides={}).tasks["a"].predictor
    assert len(two.adapters) == 2 and _same(_params(two.adapters[0]), first) and \
        _same(_params(two.base.network), before)
    assert one.tasks["a"].fitted == base.tasks["a"].fitted and one.name == "aio-p-adapters"


@pytest.mark.parametrize("train", ["heads", "heads+base", "heads+adapters"])
def test_fine_tune_trains_only_what_the_mode_names(data, train):
    p = _adapted(data, 1)
    base, convs, head = _params(p.base.network), _params(p.adapters[0].convs), _params(p.adapters[0].head)
    samples = _samples(data["target"])[:8]
    p.fine_tune(samples, torch.Generator().manual_seed(0), train)
    assert not _same(_params(p.adapters[0].head), head), "the heads always learn"
    assert _same(_params(p.adapters[0].convs), convs) == (train != "heads+adapters")
    embed_convs = {k: v for k, v in _params(p.base.network).items() if not k.startswith("mlp.")}
    assert _same(embed_convs, {k: v for k, v in base.items() if not k.startswith("mlp.")}) == (train != "heads+base")
    assert _same({k: v for k, v in _params(p.base.network).items() if k.startswith("mlp.")},
                 {k: v for k, v in base.items() if k.startswith("mlp.")}), "with adapters the base's head is unused"
    z = p.base.to_standard(samples, torch.tensor([s.label for s in samples], dtype=torch.float64))
    assert float(z.mean()) == pytest.approx(0, abs=1e-9) and float(z.std()) == pytest.approx(1), \
        "labels standardised with the target's own statistics"
    assert p.tuned["train"] == train and all(p.requires_grad for p in p.base.network.parameters())


def test_prediction_is_the_mean_of_the_adapters_heads(data):
    p = _adapted(data, 2)
    samples = _samples(data["target"])
    heads = p.head_predictions(samples)
    assert len(heads) == 2 and heads[0] != heads[1]
    assert p.predict(samples) == pytest.approx([(a + b) / 2 for a, b in zip(*heads)], abs=1e-9)


def test_without_adapters_it_is_the_base_and_its_head_is_the_head(data):
    aiop = PredictorFile.load(data["base"]).tasks["a"].predictor
    p = AdaptedPredictor.of(aiop, FAST)
    samples = _samples(data["target"])
    assert p.predict(samples) == pytest.approx(aiop.predict(samples), abs=1e-9)
    assert p.head_predictions(samples) == [p.predict(samples)]
    before = _params(p.base.network)
    p.fine_tune(samples[:6], torch.Generator().manual_seed(0), "heads")
    after = _params(p.base.network)
    assert all(torch.equal(before[k], after[k]) != k.startswith("mlp.") for k in before)
    assert isinstance(p.base, AIOPPredictor) and not len(p.adapters)


def test_state_round_trips_through_a_predictor_file(data, tmp_path):
    p = _adapted(data, 2)
    p.fine_tune(_samples(data["target"])[:6], torch.Generator().manual_seed(1), "heads+base")
    file = PredictorFile.load(data["base"])
    file.name, file.config = "aio-p-adapters", p.config.model_dump(mode="json")
    file.tasks["a"].predictor = p
    file.save(tmp_path / "p.pt")
    raw = torch.load(tmp_path / "p.pt", weights_only=True)
    assert len(raw["tasks"]["a"]["state"]["adapters"]) == 2
    back = PredictorFile.load(tmp_path / "p.pt").tasks["a"].predictor
    samples = _samples(data["target"])
    assert back.predict(samples) == p.predict(samples) and back.head_predictions(samples) == p.head_predictions(samples)
    assert back.sources == p.sources and back.tuned == p.tuned


def test_fit_with_the_adapted_predictor_fits_its_base(data):
    file = fit_file([PerfDataset.read(data["source"])], "aio-p-adapters", {"epochs": 2}, seed=0)
    p = file.tasks["a"].predictor
    assert isinstance(p, AdaptedPredictor) and not len(p.adapters)
    reference = fit_file([PerfDataset.read(data["source"])], "aio-p", {"epochs": 2}, seed=0).tasks["a"].predictor
    samples = _samples(data["target"])
    assert p.predict(samples) == pytest.approx(reference.predict(samples), abs=1e-9)


def _sets(fast: dict) -> list[str]:
    return [x for k, v in fast.items() for x in ("--set", f"{k}={v}")]


def test_adapt_transfer_eval_flow(data, tmp_path, capsys):
    adapted, out = tmp_path / "adapted.pt", tmp_path / "t.pt"
    assert main(["predictor", "adapt", str(data["base"]), str(data["source"]), "--task", "b", "--out", str(adapted),
                 *_sets(FAST)]) == 0
    assert "1 adapter (b on s1, 24 archs)" in capsys.readouterr().out
    assert main(["predictor", "transfer", str(adapted), str(data["target"]), "--labels", "8", "--seed", "3",
                 "--out", str(out), "--train", "heads"]) == 0
    file = PredictorFile.load(out)
    assert file.name == "aio-p-adapters" and set(file.tasks) == {"a"}
    t = file.tasks["a"]
    assert len(t.fitted) == 8 and len(t.predictor.adapters) == 1 and t.predictor.tuned["train"] == "heads"
    assert set(t.baselines) == set(baseline_names(get_registry()))
    capsys.readouterr()
    assert main(["predictor", "eval", str(out), str(data["target"]), "--plot", str(tmp_path / "e.png")]) == 0
    text = capsys.readouterr().out
    assert "16 archs not used in fitting (8 used in fitting, left out)" in text and "aio-p-adapters" in text
    again, other = tmp_path / "again.pt", tmp_path / "other.pt"
    assert main(["predictor", "transfer", str(adapted), str(data["target"]), "--labels", "8", "--seed", "3",
                 "--out", str(again), "--train", "heads"]) == 0
    assert PredictorFile.load(again).tasks["a"].fitted == t.fitted, "the same archs for the same seed"
    samples = _samples(data["target"])
    assert PredictorFile.load(again).tasks["a"].predictor.predict(samples) == t.predictor.predict(samples)
    assert main(["predictor", "transfer", str(data["base"]), str(data["target"]), "--labels", "8", "--seed", "4",
                 "--out", str(other)]) == 0  # from an aio-p file: no adapters
    tuned = PredictorFile.load(other).tasks["a"]
    assert tuned.fitted != t.fitted and not len(tuned.predictor.adapters)
    assert tuned.predictor.tuned["train"] == "heads+base"


@pytest.mark.parametrize("case", ["not-aiop", "too-many-labels", "input-size", "unknown-train", "base-option",
                                  "unknown-task", "unknown-option"])
def test_bad_transfer_inputs_exit_2_and_write_nothing(case, data, tmp_path, capsys):
    file, target, extra = data["base"], data["target"], []
    if case == "not-aiop":
        file = tmp_path / "macs.pt"
        fit_file([PerfDataset.read(data["source"])], "macs", {}).save(file)
    elif case == "too-many-labels":
        extra = ["--labels", "25"]
    elif case == "input-size":
        target = data["big"]
    elif case == "unknown-train":
        extra = ["--train", "adapters"]
    elif case == "base-option":
        extra = ["--set", "width=64"]
    elif case == "unknown-task":
        extra = ["--task", "c"]
    elif case == "unknown-option":
        extra = ["--set", "fine_tune_epoch=3"]
    before = snapshot(tmp_path)
    assert main(["predictor", "transfer", str(file), str(target), "--out", str(tmp_path / "t.pt"), *extra]) == 2
    err = capsys.readouterr().err
    named = {"not-aiop": [str(file), "'macs'"], "too-many-labels": ["--labels 25", "24 labelled"],
             "input-size": [str(target), "3x16x16"], "unknown-train": ["--train adapters", "heads+base"],
             "base-option": ["--set width", "fine_tune_"], "unknown-task": ["--task c"],
             "unknown-option": ["fine_tune_epoch"]}[case]
    assert all(s in err for s in named), err
    assert "Traceback" not in err and snapshot(tmp_path) == before


def test_bad_adapt_inputs_exit_2_and_write_nothing(data, tmp_path, capsys):
    before = snapshot(tmp_path)
    out = str(tmp_path / "a.pt")
    assert main(["predictor", "adapt", str(data["base"]), str(data["source"]), "--out", out]) == 2
    assert "--task (none)" in capsys.readouterr().err  # the source labels a and b
    assert main(["predictor", "adapt", str(data["base"]), str(data["source"]), "--task", "b", "--base-task", "b",
                 "--out", out]) == 2
    assert "--base-task b" in capsys.readouterr().err
    assert main(["predictor", "adapt", str(data["base"]), str(data["big"]), "--out", out]) == 2
    assert "3x16x16" in capsys.readouterr().err
    assert snapshot(tmp_path) == before

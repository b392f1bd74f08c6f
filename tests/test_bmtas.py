"""The branched space (supergraph, built trees, prices) and the bmtas strategy."""
from __future__ import annotations

import json
import math
import random

import pytest
import torch
import yaml

from nascore.arch import Arch
from nascore.costs.flops import FlopsCost, count_macs
from nascore.errors import NascoreError, SpecError
from nascore.registry import get_registry
from nascore.spaces.branching import config_of, groups_of
from nascore.spec import validate_spec
from nascore.supernet import one_hot
from nascore.task import build_network

TASKS = ["a", "b", "c"]


def branched(backbone: str = "fbnet_a", tasks=TASKS, input_size: int = 64):
    cls = get_registry().get("space", "branched")
    return cls(cls.Config.model_validate({"backbone": backbone, "tasks": list(tasks), "input_size": input_size}))


def random_choices(space, seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    # correlated picks so that trees with shared trunks and late branches both occur
    return {d.name: str(rng.choice([0, 0, 1, 2])) for d in space.decisions()}


def copy_into_built(supernet, built, config) -> None:
    """The built tree's modules take the weights of the supernet copies they came from."""
    built.stem.load_state_dict(supernet.stem.state_dict())
    for copies, modules, row, groups in zip(supernet.layers, built.layers, config, built.groups):
        for module, group in zip(modules, groups):
            module.load_state_dict(copies[row[group[0]]].state_dict())


@pytest.mark.parametrize("backbone", ["fbnet_a", "mobilenet_v2", "fbnetv2_f1"])
def test_one_hot_supernet_is_the_built_tree(backbone):
    space = branched(backbone)
    supernet = space.supernet().eval()
    choices = random_choices(space, 0)
    arch = Arch(space="branched", config=space.config.model_dump(mode="json"), choices=choices)
    built = space.build(arch).eval()
    config = config_of(choices, space.layer_names, TASKS)
    copy_into_built(supernet, built, config)
    supernet.set_choices(choices)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = supernet(x), built(x)
    assert list(a) == list(b) == TASKS
    for t in TASKS:
        assert [f.shape for f in a[t]] == [f.shape for f in b[t]]
        assert all(torch.allclose(fa, fb, atol=1e-5) for fa, fb in zip(a[t], b[t]))
    # the supergraph computes each branch once under a one-hot mix: the tree's work, or less where a
    # parameter-free layer (fbnet_a's identity layer01) hands two branches the very same tensor
    macs = count_macs(supernet, torch.zeros(1, 3, 64, 64)), count_macs(built, torch.zeros(1, 3, 64, 64))
    assert macs[0] == macs[1] if backbone != "fbnet_a" else macs[0] <= macs[1]


def test_built_multiply_adds_equal_the_expectation_under_a_one_hot_mix():
    space = branched("mobilenet_v2")
    table = space.supernet().price(FlopsCost(), 64)
    references = space.reference_archs()
    for choices in [random_choices(space, s) for s in range(3)] + list(references.values()):
        arch = Arch(space="branched", config=space.config.model_dump(mode="json"), choices=choices)
        macs = count_macs(space.build(arch), torch.zeros(1, 3, 64, 64))
        expected = float(table.expected(one_hot(space.decisions(), choices)))
        assert macs == pytest.approx(expected, rel=1e-9) == table.of_choices(choices)
    low, high = table.bounds()
    assert low == table.of_choices(references["fully_shared"])
    assert high == table.of_choices(references["task_specific"])
    assert high - table.fixed == pytest.approx(3 * (low - table.fixed))


def test_a_soft_mix_reaches_every_decision():
    space = branched("fbnet_a", tasks=["a", "b"])
    supernet = space.supernet()
    with torch.no_grad():  # the copies start as one layer's clones (as the reference's); make them differ
        for p in supernet.layers.parameters():
            p.add_(0.1 * torch.randn_like(p))
    alpha = {d.name: torch.zeros(2, requires_grad=True) for d in space.decisions()}
    supernet.set_mix({n: torch.nn.functional.gumbel_softmax(a, tau=1.0) for n, a in alpha.items()})
    out = supernet(torch.randn(2, 3, 64, 64))
    sum(f.square().mean() for feats in out.values() for f in feats).backward()
    # fbnet_a's skip layers (01, 04, 05) are parameter-free identities: their copies agree, the choice is moot
    free = {name for name, copies in zip(space.layer_names, supernet.layers) if not list(copies.parameters())}
    assert free == {"layer01", "layer04", "layer05"}
    for name, a in alpha.items():
        size = float(a.grad.abs().sum())
        assert size < 1e-6 if name.split(".")[0] in free else size > 1e-6, (name, size)


def test_branch_config_round_trip(tmp_path):
    space = branched("fbnet_a")
    arch = Arch(space="branched", config=space.config.model_dump(mode="json"), choices=random_choices(space, 1))
    arch.save(tmp_path / "branch_config.json")
    loaded = Arch.load(tmp_path / "branch_config.json")
    assert loaded == arch
    assert loaded.config["backbone"]["name"] == "fbnet_a"  # the backbone arch is stored, not a reference
    rebuilt = get_registry().get("space", "branched").for_arch(loaded).build(loaded)
    assert rebuilt.groups == groups_of(config_of(arch.choices, space.layer_names, TASKS), 3)
    original = space.build(arch)
    assert original.state_dict().keys() == rebuilt.state_dict().keys()


def test_bad_backbones_and_task_lists_are_named():
    cls = get_registry().get("space", "branched")
    with pytest.raises(ValueError, match="neither an arch file nor a named arch"):
        cls.Config.model_validate({"backbone": "no_such_arch", "tasks": TASKS})
    with pytest.raises(ValueError, match="2 to 12 tasks"):
        cls.Config.model_validate({"backbone": "fbnet_a", "tasks": ["a"]})
    with pytest.raises(ValueError, match="listed twice"):
        cls.Config.model_validate({"backbone": "fbnet_a", "tasks": ["a", "a"]})


def test_multi_path_backbone_is_refused(tmp_path):
    fbnetv5 = get_registry().get("space", "fbnetv5")
    space = fbnetv5(fbnetv5.Config.model_validate({"input_size": 64}))
    arch = Arch(space="fbnetv5", config=space.config.model_dump(mode="json"),
                choices={d.name: d.options[0] for d in space.decisions()})
    arch.save(tmp_path / "v5.json")
    cls = get_registry().get("space", "branched")
    with pytest.raises(ValueError, match="space 'fbnetv5' cannot be branched: .*not a single sequence"):
        cls.Config.model_validate({"backbone": str(tmp_path / "v5.json"), "tasks": TASKS})


def spec_data(**strategy) -> dict:
    return {"seed": 0, "dataset": {"name": "digit-scenes", "image_size": 64, "num_train": 96, "num_val": 32},
            "tasks": [{"name": "segmentation", "channels": 16}, {"name": "classification"}],
            "space": {"name": "branched", "backbone": "fbnet_a", "input_size": 64},
            "strategy": {"name": "bmtas", "epochs": 4, "warmup_epochs": 1, "batch_size": 16, "max_steps": 2,
                         "bn_batches": 1, **strategy},
            "cost": {"name": "flops", "loss": {"form": "additive", "lambda": 0.05, "scale": 1.0e7}},
            "pareto": {"samples": 0}}


def test_spec_fills_the_space_tasks_and_checks_them():
    spec = validate_spec(spec_data())
    assert spec.space.config.tasks == ["segmentation", "classification"]
    assert spec.dump()["space"]["tasks"] == ["segmentation", "classification"]
    data = spec_data()
    data["space"]["tasks"] = ["segmentation", "detection"]
    with pytest.raises(SpecError, match=r"space.tasks: .* are not the spec's tasks"):
        validate_spec(data)
    data = spec_data()
    data["space"]["backbone"] = "fbnet_z"
    with pytest.raises(SpecError, match="space.backbone: .*neither an arch file nor a named arch"):
        validate_spec(data)


def test_network_refuses_tasks_the_branched_backbone_does_not_serve():
    space = branched("fbnet_a", tasks=["segmentation", "saliency"])
    task = get_registry().get("task", "segmentation")
    info = get_registry().get("dataset", "digit-scenes")(
        get_registry().get("dataset", "digit-scenes").Config.model_validate({"image_size": 64})).info()
    with pytest.raises(NascoreError, match="computes features for tasks segmentation, saliency"):
        build_network(space.supernet(), [task(task.Config())], info)


def test_temperature_schedule_and_warmup_default():
    cls = get_registry().get("strategy", "bmtas")
    cfg = cls.Config.model_validate({"epochs": 40})
    assert cfg.warmup == 2  # 1/20 of the epochs, as the reference
    assert cfg.temperature_at(0) == cfg.temperature_at(2) == 5.0
    assert cfg.temperature_at(39) == pytest.approx(0.1)
    assert cfg.temperature_at(21) == pytest.approx(5.0 - 19 / 37 * 4.9)
    with pytest.raises(ValueError, match="warmup_epochs"):
        cls.Config.model_validate({"epochs": 4, "warmup_epochs": 4})
    partial = cls.Config.model_validate({"arch": {"lr": 0.1}})  # the other settings keep the reference's
    assert (partial.arch.weight_decay, partial.weights.lr, partial.weights.weight_decay) == (5e-5, 1e-3, 1e-4)


def run_search(tmp_path, data) -> tuple:
    from nascore.run import run_spec
    from nascore.rundir import open_run

    spec = validate_spec(data)
    run = open_run(spec, tmp_path / "run", resume=False)
    summary = run_spec(run)
    rows = [json.loads(line) for line in (run.out_dir / "metrics.jsonl").read_text().splitlines()]
    return run, summary, rows


def test_architecture_pass_takes_its_own_step_count_and_lr_schedule(tmp_path):
    """``arch: {steps, schedule}`` (shared with dnas): one architecture step per epoch where weights take two, at
    theta's cosine rate over the epochs after the warm-up."""
    _, _, rows = run_search(tmp_path, spec_data(arch={"steps": 1, "schedule": "cosine"}))
    searched = [r for r in rows if r["phase"] == "search" and not r["warmup"]]
    assert [r["arch_steps"] for r in searched] == [1, 1, 1]
    assert [r["arch_lr"] for r in searched] == pytest.approx([0.01 * 0.5 * (1 + math.cos(math.pi * k / 3))
                                                              for k in range(3)], rel=1e-12)


def test_warmup_runs_every_task_on_its_own_copy(tmp_path, monkeypatch):
    from nascore.spaces.branched import BranchedSupernet

    seen = []
    original = BranchedSupernet.apply_mix

    def spy(self, mix):
        seen.append({n: m.detach().clone() for n, m in mix.items()})
        original(self, mix)

    monkeypatch.setattr(BranchedSupernet, "apply_mix", spy)
    data = spec_data(epochs=2, warmup_epochs=1)
    run_search(tmp_path, data)
    pricing, warm = seen[0], seen[1:3]  # the pricing forward (all on copy 0), then the warm-up's two steps
    assert all(torch.equal(w, torch.tensor([1.0, 0.0])) for w in pricing.values())
    for mix in warm:
        for name, w in mix.items():
            own = ["segmentation", "classification"].index(name.rsplit(".", 1)[1])
            assert torch.equal(w, torch.eye(2)[own])


#: a three-layer chain: every layer's sharing weighs in the expected cost (deep chains' costs are dominated by
#: layers that share only if every layer before them does), so the resource term's pull is large and fast
SHORT_CHAIN = {"space": "fbnet", "config": {"stages": [[16, 1, 2], [24, 1, 2], [32, 1, 2]], "stem_channels": 16,
                                            "head_channels": 64},
               "choices": {"layer01": "k3_e6", "layer02": "k3_e6", "layer03": "k3_e6"}}


def test_uniform_theta_is_a_saddle_of_the_expected_cost():
    """Why bmtas starts from noise: at uniform probabilities the expected cost has zero gradient; leaning both
    tasks to one copy lowers it, leaning them to different copies raises it."""
    space = branched("fbnet_a", tasks=["a", "b"])
    table = space.supernet().price(FlopsCost(), 64)
    names = [d.name for d in space.decisions()]

    def cost(logits: dict) -> torch.Tensor:
        return table.expected({n: torch.softmax(t, 0) for n, t in logits.items()})

    theta = {n: torch.zeros(2, requires_grad=True) for n in names}
    cost(theta).backward()
    assert all(torch.count_nonzero(t.grad) == 0 for t in theta.values())
    lean = {n: torch.tensor([0.1, -0.1]) for n in names}
    apart = {n: torch.tensor([0.1, -0.1]) * (1 if n.endswith(".a") else -1) for n in names}
    at_uniform = float(cost({n: torch.zeros(2) for n in names}))
    assert float(cost(lean)) < at_uniform < float(cost(apart))


@pytest.fixture
def one_thread():
    """One reduction order on every machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def short_chain_search(tmp_path, lam: float, **strategy) -> tuple:
    data = spec_data(epochs=7, warmup_epochs=1, arch={"lr": 0.1, "weight_decay": 0.0}, **strategy)
    data["space"]["backbone"] = SHORT_CHAIN
    data["cost"]["loss"].update({"lambda": lam, "scale": 1.0e4})
    run, summary, rows = run_search(tmp_path, data)
    return [r["expected_cost"] for r in rows if r["phase"] == "search"], run, summary


@pytest.mark.slow
def test_resource_loss_drives_the_search_to_share(tmp_path, one_thread):
    """A heavy resource weight lowers the exact expected cost every epoch and ends with a net that shares; without
    it the tasks drift apart. Margins are fractions of the cost range between fully shared and task-specific."""
    heavy, run, summary = short_chain_search(tmp_path / "heavy", 100.0)
    free, _, _ = short_chain_search(tmp_path / "free", 0.0)
    arch = Arch.load(run.out_dir / summary["archs"]["shared"]["file"])
    table = get_registry().get("space", "branched").for_arch(arch).supernet().price(FlopsCost(), 64)
    low, high = table.bounds()
    assert all(b < a for a, b in zip(heavy, heavy[1:])), heavy
    assert heavy[-1] < heavy[0] - 0.05 * (high - low)
    assert free[-1] > heavy[-1] + 0.05 * (high - low), (free, heavy)
    assert table.of_choices(arch.choices) < high


@pytest.mark.slow
def test_search_writes_branch_config_and_train_compares(tmp_path):
    from nascore.cli import main

    data = spec_data(epochs=2, warmup_epochs=1)
    data["train"] = {"epochs": 1, "batch_size": 32, "optimizer": "adamw", "lr": 0.002}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    assert main(["run", str(spec_file), "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    entry = summary["archs"]["shared"]
    assert entry["file"] == "branch_config.json"
    assert set(entry["references"]) == {"task_specific", "fully_shared"}
    refs = entry["references"]
    assert refs["task_specific"]["relative"] == 0.0
    assert refs["fully_shared"]["macs"] < refs["task_specific"]["macs"]
    for res in [entry["train"], *refs.values()]:
        assert {"val/segmentation/miou", "val/classification/top1", "macs", "params"} <= set(res)
    assert main(["info", str(tmp_path / "run" / "branch_config.json")]) == 0
    # the branch config trains on its own with nascore train
    assert main(["train", str(tmp_path / "run" / "branch_config.json"), "--spec", str(spec_file),
                 "--out", str(tmp_path / "train"), "--set", "train.references=false"]) == 0
    trained = json.loads((tmp_path / "train" / "summary.json").read_text())["archs"]["shared"]
    assert "references" not in trained and trained["train"]["macs"] == entry["train"]["macs"]
    assert (tmp_path / "train" / "branch_config.json").is_file()

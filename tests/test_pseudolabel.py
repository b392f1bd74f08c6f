"""AIO-P pseudo-labels (nascore.performance.pseudolabel, nascore bench pseudo-label): latent sampling over a
population of bodies, the depth bins and their round robin, the command's performance dataset (bench collect's plan),
determinism, resuming, bad inputs."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor, nn

from nascore import epochs
from nascore.cli import main
from nascore.parts import Parts
from nascore.performance import pseudolabel
from nascore.performance.collect import plan_manifest
from nascore.performance.perfdata import PerfDataset
from nascore.performance.pseudolabel import (
    DepthBins,
    Population,
    depth,
    depth_ranges,
    latent_batch,
    moments,
)
from nascore.spec import validate_spec
from test_predictors import tiny_spec
from workspace import snapshot


class FixedBodies(nn.Module):
    """A stand-in supernet: body ``choices["body"]`` returns fixed feature levels whatever the images (batch-wide),
    and has a BatchNorm buffer that a forward in train mode would move."""

    def __init__(self, bodies: dict[str, list[Tensor]]):
        super().__init__()
        self.bodies = bodies
        self.norm = nn.BatchNorm1d(1)
        self.body = None

    def set_choices(self, choices: dict[str, str]) -> None:
        self.body = choices["body"]

    def forward(self, images: Tensor) -> list[Tensor]:
        self.norm(images.flatten(1)[:, :1])  # train mode: moves the running statistics
        return [level.expand(len(images), *level.shape[1:]) for level in self.bodies[self.body]]


def test_latent_samples_have_the_populations_mean_and_std():
    """Two bodies a, b: z = mu + zeta sigma with mu = (a + b) / 2 and sigma = |a - b| / 2 (the population's), so over
    many draws z has that mean and std; zeta is drawn anew per level; the stand-in's buffers are left as they were."""
    a = torch.tensor([1.0, -2.0, 0.5, 3.0]).view(1, 4, 1, 1)
    b = torch.tensor([3.0, -2.0, -1.5, 0.0]).view(1, 4, 1, 1)
    net = FixedBodies({"a": [a, a * 10], "b": [b, b * 10]})
    before = {k: v.clone() for k, v in net.state_dict().items()}
    z = latent_batch(net, [{"body": "a"}, {"body": "b"}], torch.rand(20000, 1, 2, 2), torch.Generator().manual_seed(0))
    mu, sigma = (a + b) / 2, (a - b).abs() / 2
    assert torch.allclose(z[0].mean(0, keepdim=True), mu, atol=0.04)
    assert torch.allclose(z[0].std(0, keepdim=True), sigma, atol=0.04)
    assert torch.allclose(z[1].mean(0, keepdim=True), mu * 10, atol=0.4)
    assert torch.allclose(z[1].std(0, keepdim=True), sigma * 10, atol=0.4)
    assert torch.equal(z[0][:, 1], torch.full_like(z[0][:, 1], -2.0)), "equal features: sigma 0"
    zeta0, zeta1 = (z[0][:, 0] - mu[:, 0]).flatten(), (z[1][:, 0] - 10 * mu[:, 0]).flatten()
    assert abs(float(torch.corrcoef(torch.stack([zeta0, zeta1]))[0, 1])) < 0.05, "one zeta per level"
    assert not z[0].requires_grad
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_one_body_gives_its_own_features_and_moments_are_the_population_statistics():
    a = torch.randn(2, 3, 4, 4)
    net = FixedBodies({"a": [a]})
    z = latent_batch(net, [{"body": "a"}], torch.rand(2, 1, 2, 2), torch.Generator().manual_seed(0))
    assert torch.equal(z[0], a), "a population of one: sigma 0, z is the body's features"
    feats = [[torch.randn(3, 5)] for _ in range(6)]
    mu, sigma = moments(feats)
    stacked = torch.stack([f[0] for f in feats])
    assert torch.allclose(mu[0], stacked.mean(0), atol=1e-6)
    assert torch.allclose(sigma[0], stacked.std(0, unbiased=False), atol=1e-5)


class CountingBins:
    """Three bins; each new arch is named by its bin and a running count."""

    ranges = [(0, 0), (1, 1), (2, 2)]

    def __init__(self):
        self.count = 0

    def sample(self, b: int, rng: random.Random) -> dict[str, str]:
        self.count += 1
        return {"bin": str(b), "n": str(self.count)}


def test_round_robin_replaces_the_oldest_arch_of_the_next_bin():
    rng = random.Random(0)
    population = Population(CountingBins(), 2, rng)
    assert [[a["n"] for a in m] for m in population.members] == [["1", "2"], ["3", "4"], ["5", "6"]]
    new = population.refresh(rng)
    assert new == {"bin": "0", "n": "7"}
    assert [[a["n"] for a in m] for m in population.members] == [["2", "7"], ["3", "4"], ["5", "6"]]
    for _ in range(5):
        population.refresh(rng)
    assert [[a["n"] for a in m] for m in population.members] == [["7", "10"], ["8", "11"], ["9", "12"]]
    assert all(a["bin"] == str(b) for b, m in enumerate(population.members) for a in m)
    assert len(population.archs()) == 6 and population.next_bin == 0


def test_depth_bins_cut_the_depths_as_the_paper_and_sample_within_them():
    assert depth_ranges(10, 20, 5) == [(10, 11), (12, 13), (14, 16), (17, 18), (19, 20)]  # AIO-P's MobileNetV3 bins
    assert depth_ranges(7, 7, 3) == [(7, 7)] * 3
    spec = validate_spec(tiny_spec(Path("unused")))
    decisions = spec.space.create().decisions()
    bins = DepthBins(decisions, 5, seed=0)
    assert bins.ranges[0][0] < bins.ranges[-1][1] <= len(decisions)
    assert all(r[1] + 1 == s[0] for r, s in zip(bins.ranges, bins.ranges[1:]))
    rng = random.Random(1)
    for b, (lo, hi) in enumerate(bins.ranges):
        for _ in range(20):
            choices = bins.sample(b, rng)
            assert lo <= depth(decisions, choices) <= hi
            assert all(choices[d.name] in d.options for d in decisions)


# -- the command -----------------------------------------------------------------------------------------------
FAST = ["--supernet-epochs", "1", "--head-epochs", "1", "--finetune-steps", "2", "--task", "saliency"]


def _labels(folder: Path) -> dict[int, tuple]:
    return {r.index: (r.tasks["saliency"].label, r.tasks["saliency"].metrics) for r in PerfDataset.read(folder).records}


@pytest.fixture(scope="module")
def made(tmp_path_factory, cache_dir) -> tuple[Path, Path]:
    """Pseudo-labels of 3 archs on saliency (spec file, folder), made once for the module."""
    root = tmp_path_factory.mktemp("pseudo")
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(cache_dir)))
    assert main(["bench", "pseudo-label", str(spec), "--archs", "3", "--out", str(root / "a"), *FAST]) == 0
    return spec, root / "a"


def test_pseudo_label_writes_a_performance_dataset_of_collects_plan(made, capsys):
    spec_file, folder = made
    data = PerfDataset.read(folder)
    spec = validate_spec(yaml.safe_load(spec_file.read_text()))
    assert data.manifest.model_dump() == plan_manifest(spec, Parts.build(spec), 3, 0).model_dump(), \
        "bench collect's manifest and plan"
    assert [r.index for r in data.records] == [0, 1, 2]
    for r in data.records:
        assert list(r.tasks) == ["saliency"]
        entry = r.tasks["saliency"]
        assert entry.label == entry.metrics["val/saliency/max_f"] and 0 <= entry.label <= 1
        assert entry.note.startswith("pseudo-label") and entry.seconds > 0
        assert r.macs > 0 and r.graph.ops
    info = pseudolabel.read_info(folder)
    assert info.options["task"] == "saliency" and info.pretrain_task == "classification"
    assert info.seconds["supernet"] > 0 and info.seconds["head"] > 0 and info.seconds["finetune_per_arch"] > 0
    assert len(info.depth_bins) == 5 and 0 <= info.supernet_check <= 1


def test_pseudo_labels_are_deterministic_per_seed_and_resume(made, tmp_path, monkeypatch):
    """A command stopped after the supernet's first epoch, run again, gives the labels one uninterrupted command
    gives; so does an arch whose record was lost, labelled again; another training seed gives other labels."""
    spec, _ = made
    calls = []
    real_save = epochs.save_checkpoint  # the epoch loop checkpoints the shared phases

    def stop_after_first_epoch(obj, path):
        real_save(obj, path)
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt

    args = ["bench", "pseudo-label", str(spec), "--archs", "2", *FAST, "--supernet-epochs", "2"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    monkeypatch.setattr(epochs, "save_checkpoint", stop_after_first_epoch)
    assert main([*args, "--out", str(tmp_path / "stopped")]) == 130
    assert not (tmp_path / "stopped" / "archs").exists()
    monkeypatch.setattr(epochs, "save_checkpoint", real_save)
    assert main([*args, "--out", str(tmp_path / "stopped")]) == 0
    assert _labels(tmp_path / "stopped") == _labels(tmp_path / "whole")
    (tmp_path / "stopped" / "archs" / "00001.json").unlink()
    assert main([*args, "--out", str(tmp_path / "stopped")]) == 0
    assert _labels(tmp_path / "stopped") == _labels(tmp_path / "whole"), "a resumed arch gets the label it had"
    assert main([*args, "--out", str(tmp_path / "seed1"), "--set", "seed=1", "--seed", "0"]) == 0
    assert [r.arch for r in PerfDataset.read(tmp_path / "seed1").records] == \
        [r.arch for r in PerfDataset.read(tmp_path / "whole").records], "the same plan (--seed 0)"
    assert _labels(tmp_path / "seed1") != _labels(tmp_path / "whole")


@pytest.mark.parametrize("flags, message", [
    (["--task", "depth"], "--task 'depth' is not a task"),
    (["--finetune-steps", "-1"], "--finetune-steps must be"),
    (["--supernet-epochs", "0"], "--supernet-epochs must be"),
    (["--head-epochs", "-2"], "--head-epochs must be"),
    (["--bins", "0"], "--bins must be"),
    (["--per-bin", "0"], "--per-bin must be"),
    (["--archs", "0"], "--archs must be"),
])
def test_bad_inputs_exit_2_naming_the_flag(made, tmp_path, capsys, flags, message):
    spec, _ = made
    before = snapshot(tmp_path)
    argv = ["bench", "pseudo-label", str(spec), "--archs", "3", "--out", str(tmp_path / "out"), *flags]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert snapshot(tmp_path) == before, "nothing written"


def test_a_folder_of_other_labels_or_options_is_refused(made, tmp_path, capsys, cache_dir):
    spec, folder = made
    before = snapshot(folder)
    argv = ["bench", "pseudo-label", str(spec), "--archs", "3", "--out", str(folder)]
    assert main([*argv, *FAST[:-2], "--task", "classification"]) == 2
    assert "--task 'saliency' (not 'classification')" in capsys.readouterr().err
    assert main([*argv, *FAST, "--finetune-steps", "5"]) == 2
    assert "--finetune-steps 2 (not 5)" in capsys.readouterr().err
    assert main(["bench", "collect", str(spec), "--archs", "3", "--out", str(folder)]) == 2
    assert "holds pseudo-labels" in capsys.readouterr().err
    assert snapshot(folder) == before
    assert main([*argv[:-1], str(tmp_path / "x"), *FAST, "--supernet", str(folder / "supernet.pt"),
                 "--set", "train.lr=0.01"]) == 2
    assert "was trained for other options: train.lr: " in capsys.readouterr().err


def test_the_supernet_rule_is_an_option_of_its_own(made, tmp_path, capsys):
    spec, folder = made
    argv = ["bench", "pseudo-label", str(spec), "--archs", "3", "--out", str(folder), *FAST]
    assert main([*argv, "--rule", "fair"]) == 2
    assert "--rule 'uniform' (not 'fair')" in capsys.readouterr().err
    # a uniform supernet is not a fair one
    other = ["bench", "pseudo-label", str(spec), "--archs", "1", "--out", str(tmp_path / "fair"), *FAST]
    assert main([*other, "--rule", "fair", "--supernet", str(folder / "supernet.pt")]) == 2
    assert "--rule" in capsys.readouterr().err and not (tmp_path / "fair").exists()
    assert main([*other, "--rule", "fair"]) == 0
    info = json.loads((tmp_path / "fair" / "pseudolabel.json").read_text())
    assert info["options"]["rule"] == "fair" and "fair-rule one-shot supernet" in info["method"]


def test_a_folder_made_before_the_rule_option_resumes(made, tmp_path):
    spec, folder = made
    copy = tmp_path / "old"
    shutil.copytree(folder, copy)
    info = json.loads((copy / "pseudolabel.json").read_text())
    del info["options"]["rule"]
    (copy / "pseudolabel.json").write_text(json.dumps(info))
    assert main(["bench", "pseudo-label", str(spec), "--archs", "3", "--out", str(copy), *FAST]) == 0

"""Mixed precision (spec ``amp``) and ``channels_last``: autocast reaches the forward, fp16 scales the loss and skips
an overflowing step, NHWC reaches the network and the images, and a search and a training run with them from a
spec, the loss scale checkpointed (test_resume.py kills and resumes such a run)."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import nn

from nascore.cli import main
from nascore.loops import train_step
from nascore.precision import AmpConfig, Precision


class Net(nn.Module):
    """A conv and a linear head; records the dtype and memory format the conv saw and produced."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4, 3)
        self.seen: list[tuple[torch.dtype, bool]] = []

    def forward(self, x):
        y = self.conv(x)
        self.seen.append((y.dtype, x.is_contiguous(memory_format=torch.channels_last)))
        return {"t": self.head(y.mean((2, 3)))}


class Task:
    name = "t"

    def loss(self, out, targets):
        return nn.functional.cross_entropy(out.float(), targets["y"])


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 8, 8, generator=g), {"y": torch.tensor([0, 1, 2, 0])}


@pytest.mark.parametrize("dtype,expected", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_reaches_the_forward(dtype, expected):
    net, (x, y) = Net(), batch()
    precision = Precision(AmpConfig(dtype=dtype))
    before = net.conv.weight.detach().clone()
    loss, _ = train_step(net, x, y, [Task()], torch.optim.SGD(net.parameters(), lr=0.1), torch.device("cpu"), 0, 0,
                         precision=precision)
    assert net.seen == [(expected, False)] and torch.isfinite(loss)
    assert net.conv.weight.dtype == torch.float32 and not torch.equal(before, net.conv.weight)  # fp32 master weights
    assert (precision.scaler is not None) == (dtype == "fp16")


def test_fp16_skips_an_overflowing_step_and_lowers_the_scale():
    net, (x, y) = Net(), batch()
    precision = Precision(AmpConfig(dtype="fp16"))
    precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)  # scaled gradients overflow fp16... and fp32
    before = [p.detach().clone() for p in net.parameters()]
    train_step(net, x, y, [Task()], torch.optim.SGD(net.parameters(), lr=0.1), torch.device("cpu"), 0, 0,
               precision=precision)
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters()))  # the step was skipped
    assert precision.state_dict()["scale"] < 2.0**100
    restored = Precision(AmpConfig(dtype="fp16"))
    restored.load_state_dict(precision.state_dict())
    assert restored.scaler.get_scale() == precision.scaler.get_scale()


def test_channels_last_reaches_the_network_and_the_images():
    net, (x, y) = Net(), batch()
    precision = Precision(channels_last=True)
    precision.network(net)
    assert net.conv.weight.is_contiguous(memory_format=torch.channels_last)
    train_step(net, x, y, [Task()], torch.optim.SGD(net.parameters(), lr=0.1), torch.device("cpu"), 0, 0,
               precision=precision)
    assert net.seen == [(torch.float32, True)]
    assert precision.images({"not": "a tensor"}) == {"not": "a tensor"}


def test_plain_precision_changes_nothing():
    precision = Precision()
    x = torch.randn(2, 3, 4, 4)
    assert precision.images(x) is x and precision.scaler is None and precision.state_dict() == {}


class Paths:
    """Stands for a supernet: records the paths a step sets."""

    def __init__(self):
        self.set: list[dict[str, str]] = []

    def set_choices(self, choices):
        self.set.append(choices)


SANDWICH = [{"layer": "largest"}, {"layer": "smallest"}]


def test_a_one_shot_step_runs_every_path_in_the_precision():
    """``oneshot_step`` (the supernet training of ``oneshot`` and ``bench supernet-rank``): every path's forward
    under autocast, on NHWC images, one step from their gradients."""
    from nascore.performance.oneshot import OneShot, oneshot_step

    net, (x, y), supernet = Net(), batch(), Paths()
    precision = Precision(AmpConfig(dtype="bf16"), channels_last=True)
    precision.network(net)
    before = net.conv.weight.detach().clone()
    oneshot_step(net, supernet, Task(), SANDWICH, x, y, torch.optim.SGD(net.parameters(), lr=0.1),
                 OneShot(rule="sandwich"), 0, 0, precision)
    assert supernet.set == SANDWICH and net.seen == [(torch.bfloat16, True)] * 2
    assert not torch.equal(before, net.conv.weight)


def test_a_one_shot_step_is_skipped_when_its_scaled_gradients_overflow():
    from nascore.performance.oneshot import OneShot, oneshot_step

    net, (x, y) = Net(), batch()
    precision = Precision(AmpConfig(dtype="fp16"))
    precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)
    before = [p.detach().clone() for p in net.parameters()]
    oneshot_step(net, Paths(), Task(), SANDWICH, x, y, torch.optim.SGD(net.parameters(), lr=0.1),
                 OneShot(rule="sandwich"), 0, 0, precision)
    assert net.seen == [(torch.float16, False)] * 2
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters()))
    assert precision.state_dict()["scale"] < 2.0**100


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    from tiny import dnas_spec

    tmp = tmp_path_factory.mktemp("amp")
    spec = {**dnas_spec(tmp / "cache", epochs=2, max_steps=2), "amp": {"dtype": "fp16"}, "channels_last": True}
    spec["train"] = {"epochs": 2, "batch_size": 16, "lr": 0.05, "references": False}
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_search_and_training_run_with_amp_and_channels_last(spec_file, tmp_path):
    from nascore.fileio import load_checkpoint

    out = tmp_path / "run"
    assert main(["run", str(spec_file), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["search", "search", "train", "train"]
    assert all(v == v for r in rows for v in r.values() if isinstance(v, float))  # no NaN
    for phase in ("search", "train"):
        state = load_checkpoint(out / "checkpoints" / f"{phase}.pt")["state"]
        assert state["precision"]["scale"] > 0  # the fp16 loss scale, for a resume
    resolved = yaml.safe_load((out / "spec.yaml").read_text())
    assert resolved["amp"] == {"dtype": "fp16"} and resolved["channels_last"] is True


def test_a_bad_amp_block_is_named(tmp_path, capsys):
    from tiny import dnas_spec

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**dnas_spec(tmp_path / "cache"), "amp": {"dtype": "fp8"}}))
    assert main(["validate", str(path)]) == 2
    assert "amp.dtype" in capsys.readouterr().err

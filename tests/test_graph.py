"""Computational graphs (nascore.performance.graph): op vocabulary, data-flow edges, features, untraceable models,
CLI."""
from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nascore.arch import Arch
from nascore.cli import main
from nascore.errors import NascoreError
from nascore.performance.graph import FEATURE_WIDTH, NUMERIC_FEATURES, OOV, OPS, build_graph, histogram, resolve_model
from nascore.registry import get_registry


class SE(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.reduce, self.act, self.expand = nn.Conv2d(c, c // 2, 1), nn.ReLU(), nn.Conv2d(c // 2, c, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class Tiny(nn.Module):
    """conv-bn-relu, depth-wise conv + hardswish, SE, grouped conv + channel shuffle, residual, concat, pool, fc."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8)
        self.dw, self.bn1 = nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8)
        self.se = SE(8)
        self.pw, self.bn2 = nn.Conv2d(8, 8, 1, groups=2, bias=False), nn.BatchNorm2d(8)
        self.shuffle = nn.ChannelShuffle(2)
        self.skip = nn.Identity()
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        y = self.se(F.hardswish(self.bn1(self.dw(x))))
        y = self.shuffle(self.bn2(self.pw(y)))
        y = self.skip(x) + y
        z = torch.cat([x, y], 1)
        z = F.adaptive_avg_pool2d(z, 1).view(z.size(0), -1)
        return self.fc(F.dropout(z, 0.2, self.training))


TINY_OPS = ["input", "conv", "batch_norm", "relu", "depthwise_conv", "batch_norm", "hardswish", "global_pool",
            "conv", "relu", "conv", "hardsigmoid", "mul", "grouped_conv", "batch_norm", "channel_shuffle", "add",
            "concat", "global_pool", "linear", "output"]
TINY_EDGES = {(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (7, 8), (8, 9), (9, 10), (10, 11), (6, 12),
              (11, 12), (12, 13), (13, 14), (14, 15), (3, 16), (15, 16), (3, 17), (16, 17), (17, 18), (18, 19),
              (19, 20)}


def edges(graph) -> set[tuple[int, int]]:
    return set(map(tuple, graph.edge_index.t().tolist()))


def test_hand_built_net_has_exactly_its_ops_and_data_flow():
    net = Tiny().train()
    graph = build_graph(net, 32)
    assert graph.ops == TINY_OPS
    assert edges(graph) == TINY_EDGES and graph.edge_index.shape == (2, len(TINY_EDGES))
    assert net.training  # left as it was found
    assert graph.x.shape == (len(TINY_OPS), FEATURE_WIDTH) == (21, len(OPS) + len(NUMERIC_FEATURES))
    assert torch.equal(graph.x[:, :len(OPS)].argmax(1), torch.tensor([OPS.index(op) for op in TINY_OPS]))
    assert torch.equal(graph.x[:, :len(OPS)].sum(1), torch.ones(len(TINY_OPS)))
    f = dict(zip(NUMERIC_FEATURES, graph.x[1, len(OPS):].tolist()))  # the stem: 3x32x32 -> 8x16x16, k3 s2
    assert f == pytest.approx({"h_in": 32 / 256, "w_in": 32 / 256, "c_in": 3 / 512, "h_out": 16 / 256,
                               "w_out": 16 / 256, "c_out": 8 / 512, "kernel_h": 3 / 8, "kernel_w": 3 / 8,
                               "stride_h": 2 / 4, "stride_w": 2 / 4, "log_groups": 0.0, "bias": 0.0})
    assert graph.x[4, len(OPS) + NUMERIC_FEATURES.index("log_groups")] == pytest.approx(3 / 10)  # 8 groups
    assert graph.x[8, len(OPS) + NUMERIC_FEATURES.index("bias")] == 1.0  # the SE's conv has a bias
    assert graph.x[19, len(OPS) + NUMERIC_FEATURES.index("c_in")] == pytest.approx(16 / 512)


class Erf(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.erf(self.conv(x)).sigmoid()


class Custom(nn.Module):
    def forward(self, x):
        return x * 2


def test_unknown_ops_get_the_oov_token():
    graph = build_graph(Erf(), 16)
    assert graph.ops == ["input", "conv", OOV, "sigmoid", "output"]
    assert graph.x[2, OPS.index(OOV)] == 1.0
    kept = build_graph(nn.Sequential(nn.Conv2d(3, 4, 3), Custom()), 16, leaf_types=(Custom,))
    assert kept.ops == ["input", "conv", OOV, "output"]


class Branchy(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


def test_untraceable_model_names_the_module():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), Branchy()))
    with pytest.raises(NascoreError, match=r"module '1\.1' \(Branchy\)"):
        build_graph(net, 16)


def module_counts(model: nn.Module) -> Counter:
    counts: Counter = Counter()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            counts["conv2d"] += 1
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            counts["batch_norm"] += 1
        elif "ChannelShuffle" in type(m).__name__:
            counts["channel_shuffle"] += 1
    return counts


def check_counts(model: nn.Module, graph) -> Counter:
    ops = histogram(graph)
    expected = module_counts(model)
    assert OOV not in ops
    assert ops["conv"] + ops["depthwise_conv"] + ops["grouped_conv"] == expected["conv2d"]
    assert ops["batch_norm"] == expected["batch_norm"]
    assert ops["channel_shuffle"] == expected["channel_shuffle"]
    assert ops["input"] == ops["output"] == 1
    assert graph.edge_index.max() < graph.num_nodes
    return ops


NAMED = sorted(n for s in get_registry().names("space") for n in get_registry().get("space", s).named_archs())


@pytest.mark.parametrize("name", NAMED)
def test_every_named_arch_builds_a_graph(name):
    model, size, _ = resolve_model(name, 96)
    ops = check_counts(model, build_graph(model, size))
    assert ops["linear"] == 1 and ops["global_pool"] >= 1  # the classification head
    if name.startswith("fbnetv2"):
        assert ops["hardswish"] and ops["hardsigmoid"] == ops["mul"] > 0  # its SE blocks
    if name == "fbnet_a":
        assert ops["channel_shuffle"] == 3 and ops["grouped_conv"] == 3


def test_mobilenet_v2_has_its_textbook_counts():
    model, _, _ = resolve_model("mobilenet_v2")
    ops = histogram(build_graph(model, 64))
    assert ops == {"input": 1, "conv": 35, "depthwise_conv": 17, "batch_norm": 52, "relu6": 35, "add": 10,
                   "global_pool": 1, "linear": 1, "output": 1}


def test_fbnetv5_and_branched_archs_build_graphs():
    registry = get_registry()
    v5 = registry.get("space", "fbnetv5")({"input_size": 64, "width": 0.5, "blocks": [1, 2, 2, 1]})
    rng = random.Random(0)
    choices = {d.name: rng.choice(d.options) for d in v5.decisions()}
    model = v5.build(Arch(space="fbnetv5", config=v5.config.model_dump(mode="json"), choices=choices))
    graph = build_graph(model, 64)
    ops = check_counts(model, graph)
    assert ops["upsample"] + ops["concat"] + ops["add"] > 0  # paths are fused
    cls = registry.get("space", "branched")
    space = cls(cls.Config.model_validate({"backbone": "fbnet_a", "tasks": ["a", "b"], "input_size": 64}))
    choices = {d.name: str(rng.choice([0, 1])) for d in space.decisions()}
    model = space.build(Arch(space="branched", config=space.config.model_dump(mode="json"), choices=choices))
    graph = build_graph(model, 64)
    check_counts(model, graph)
    out = graph.ops.index("output")
    assert len([e for e in edges(graph) if e[1] == out]) >= 2  # a feature list per task


def test_timm_model_with_se_and_hardswish():
    model, size, what = resolve_model("timm:mobilenetv3_small_050")
    assert size == 224 and "mobilenetv3_small_050" in what
    ops = check_counts(model, build_graph(model, 64))
    se = sum(type(m).__name__ == "SqueezeExcite" for m in model.modules())
    assert ops["hardswish"] > 0 and ops["hardsigmoid"] == ops["mul"] == se > 0
    with pytest.raises(NascoreError, match="unknown timm model 'mobilenetv3_smal'.*mobilenetv3_small"):
        resolve_model("timm:mobilenetv3_smal")


def test_cli_prints_counts_and_writes_a_graph(tmp_path, capsys):
    out = tmp_path / "g" / "graph.pt"
    assert main(["graph", "mobilenet_v2", "--input-size", "64", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "nodes: 153" in text and "edges: 162" in text
    assert "  depthwise_conv  17" in text and "  relu6           35" in text
    saved = torch.load(out, weights_only=True)
    assert saved["x"].shape == (153, FEATURE_WIDTH) and saved["edge_index"].shape == (2, 162)
    assert len(saved["ops"]) == 153 and saved["vocab"] == list(OPS)
    assert [p.name for p in out.parent.iterdir()] == ["graph.pt"]  # no temporary left


def test_cli_untraceable_model_exits_2(monkeypatch, capsys):
    import nascore.performance.graph

    assert main(["graph", "timm:no_such_model_x"]) == 2
    assert "unknown timm model 'no_such_model_x'" in capsys.readouterr().err
    net = nn.Sequential(nn.Conv2d(3, 4, 3), Branchy())
    monkeypatch.setattr(nascore.performance.graph, "resolve_model", lambda ref, size: (net, 16, "a test net"))
    assert main(["graph", "whatever"]) == 2
    assert "module '1' (Branchy)" in capsys.readouterr().err


class _LibraryConv(nn.Conv2d):
    """A convolution as detectron2 writes it: norm and activation inside, a branch on numel() fx cannot trace."""

    def __init__(self, *args, norm=None, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm, self.activation = norm, activation

    def forward(self, x):
        if x.numel() == 0:
            return x
        x = self.norm(super().forward(x))
        return self.activation(x)


def test_convolution_of_another_library_is_one_node_then_its_norm_and_activation():
    model = nn.Sequential(_LibraryConv(3, 4, 3, norm=nn.BatchNorm2d(4), activation=F.relu), nn.Hardswish())
    assert build_graph(model, 8).ops == ["input", "conv", "batch_norm", "relu", "hardswish", "output"]

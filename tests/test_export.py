"""``nascore export``: every space's archs round-trip through every format within tolerance; a trained run exports
with its heads; dynamic batch; bad sources and exporter failures exit 2 and leave no file."""
from __future__ import annotations

import json
import random
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nascore.arch import Arch
from nascore.cli import main
from nascore.deploy.export import FORMATS, META_FILE
from nascore.registry import get_registry

FBNET = {"width": 0.25, "input_size": 32, "head_channels": 64}
SPACES = {
    "fbnet": FBNET,  # channel shuffle (grouped k*_e1_g2 blocks)
    "fbnetv2": {"input_size": 30, "stem": 8, "head_channels": 64, "stages": [  # hardswish, SE, sliced widths
        {"channels": [8, 12, 16], "blocks": 2, "stride": 1, "expansions": [1.5, 3.0], "resolutions": [1, 2]},
        {"channels": [16, 24], "blocks": 2, "stride": 2, "resolutions": [1, 2, 3]}]},
    "fbnetv5": {"input_size": 32, "width": 0.25, "blocks": [1, 1, 1, 1], "head_channels": 64},  # multi-path
}


def tiny_arch(space_name: str, seed: int = 0) -> Arch:
    """A random arch of a small space; branched: a tree over a tiny fbnet arch for tasks a, b."""
    if space_name == "branched":
        config = {"backbone": tiny_arch("fbnet").model_dump(mode="json"), "tasks": ["a", "b"], "input_size": 32}
    else:
        config = SPACES[space_name]
    cls = get_registry().get("space", space_name)
    space = cls(cls.Config.model_validate(config))
    rng = random.Random(seed)
    choices = {d.name: rng.choice([o for o in d.options if o != "skip"] or d.options) for d in space.decisions()}
    return Arch(space=space_name, config=space.config.model_dump(mode="json"), choices=choices)


def arch_file(tmp_path: Path, space_name: str) -> Path:
    path = tmp_path / f"{space_name}.json"
    tiny_arch(space_name).save(path)
    return path


def meta_of(fmt: str, path: Path) -> dict:
    if fmt == "onnx":
        import onnx

        return {p.key[len("nascore."):]: p.value for p in onnx.load(str(path)).metadata_props}
    files = {META_FILE: ""}
    if fmt == "exported-program":
        torch.export.load(str(path), extra_files=files)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated; the torchscript format is still asked for
            torch.jit.load(str(path), _extra_files=files)
    return json.loads(files[META_FILE])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("space_name", ["fbnet", "fbnetv2", "fbnetv5", "branched"])
def test_every_space_round_trips(tmp_path, capsys, space_name, fmt):
    src = arch_file(tmp_path, space_name)
    out = tmp_path / "out" / "model.bin"
    assert main(["export", str(src), "--format", fmt, "--out", str(out), "--batch", "2"]) == 0
    text = capsys.readouterr().out
    assert "random weights" in text and "largest absolute difference" in text
    assert out.is_file() and not leftovers(out.parent)
    meta = meta_of(fmt, out)
    assert json.loads(meta["arch"])["choices"] == tiny_arch(space_name).choices
    assert meta["input_size"] == str(SPACES.get(space_name, FBNET)["input_size"])
    outputs = json.loads(meta["outputs"])
    if space_name == "branched":
        assert {o.split(".")[0] for o in outputs} == {"a", "b"}
    else:
        assert outputs == ["classification"]


@pytest.mark.parametrize("space_name", ["fbnet", "fbnetv2", "fbnetv5", "branched"])
def test_built_models_fx_trace_and_script(space_name):
    """A built model of every space traces with torch.fx and the traced module scripts (its forward's annotations
    are types, not postponed strings) and computes what the eager model does."""
    arch = tiny_arch(space_name)
    model = get_registry().get("space", space_name).for_arch(arch).build(arch).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, timm still tests it
        scripted = torch.jit.script(torch.fx.symbolic_trace(model))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize("fmt", FORMATS)
def test_dynamic_batch(tmp_path, capsys, fmt):
    out = tmp_path / "m"
    assert main(["export", str(arch_file(tmp_path, "fbnet")), "--format", fmt, "--out", str(out),
                 "--dynamic-batch"]) == 0
    assert "checked at 1, 3" in capsys.readouterr().out
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        (result,) = session.run(None, {"input": torch.randn(5, 3, 32, 32).numpy()})
        assert result.shape == (5, 1000)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run directory of a tiny fbnetv5 arch trained one epoch on classification and segmentation."""
    tmp = tmp_path_factory.mktemp("trained")
    spec = {"seed": 0,
            "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 16, "num_val": 8, "num_test": 8,
                        "cache_dir": str(tmp / "cache")},
            "tasks": [{"name": "classification"}, {"name": "segmentation"}],
            "space": {"name": "fbnetv5", **SPACES["fbnetv5"]},
            "strategy": {"name": "reinforce", "epochs": 1, "batch_size": 8, "max_steps": 1},
            "train": {"epochs": 1, "batch_size": 8}}
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["train", str(arch_file(tmp, "fbnetv5")), "--spec", str(tmp / "spec.yaml"),
                 "--out", str(tmp / "run")]) == 0
    return tmp / "run"


def test_trained_run_exports_with_its_heads(trained, tmp_path, capsys):
    run = trained
    for src, fmt in [(run / "train_model.pt", "exported-program"), (run, "torchscript"), (run, "onnx")]:
        out = tmp_path / f"trained.{fmt}"
        assert main(["export", str(src), "--format", fmt, "--out", str(out)]) == 0
        text = capsys.readouterr().out
        assert "trained weights" in text and "outputs: classification, segmentation" in text
        meta = meta_of(fmt, out)
        assert json.loads(meta["trained"]) is True and "mean" in meta and "std" in meta  # null: not known
    # the weights are the trained ones: the file's classification output matches the checkpoint's network
    import onnxruntime

    from nascore.deploy.export import load_source

    source = load_source(str(run))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        eager = source.model(x)["classification"]
    got = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["classification"], {"input": x.numpy()})[0]
    assert torch.allclose(eager, torch.from_numpy(got), atol=1e-4)


def test_bad_sources_exit_2_without_a_file(tmp_path, capsys):
    out = tmp_path / "o" / "m.onnx"
    corrupt = tmp_path / "run" / "train_model.pt"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"PK\x03\x04 not really")
    (tmp_path / "notarch.json").write_text('{"hello": 1}')
    (tmp_path / "empty").mkdir()
    for src, named in [(tmp_path / "missing.json", "missing.json"), (tmp_path / "notarch.json", "notarch.json"),
                       (corrupt, "train_model.pt"), (tmp_path / "empty", "empty"), ("no_such_arch", "no_such_arch")]:
        assert main(["export", str(src), "--format", "onnx", "--out", str(out)]) == 2
        assert named in capsys.readouterr().err
        assert not out.exists()


def test_exporter_failure_names_the_module(tmp_path, capsys, monkeypatch):
    from nascore.spaces.fbnet_blocks import ChannelShuffle

    # a round trip through NumPy: runs eagerly, but torch.export traces with fake tensors, which have no data
    monkeypatch.setattr(ChannelShuffle, "forward", lambda self, x: torch.from_numpy(x.detach().numpy()))
    out = tmp_path / "m.pt2"
    assert main(["export", str(arch_file(tmp_path, "fbnet")), "--format", "exported-program", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "export to exported-program failed in module" in err and "(ChannelShuffle)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fbnet.json"]


def test_unsupported_onnx_op_is_named(tmp_path, capsys, monkeypatch):
    from nascore.spaces.fbnet_blocks import ChannelShuffle

    monkeypatch.setattr(ChannelShuffle, "forward", lambda self, x: torch.fft.fft(x).real)
    assert main(["export", str(arch_file(tmp_path, "fbnet")), "--format", "onnx", "--out",
                 str(tmp_path / "m.onnx")]) == 2
    captured = capsys.readouterr()
    assert "'aten::fft_fft'" in captured.err and "in module model.backbone.layers." in captured.err
    assert ".shuffle (ChannelShuffle)" in captured.err and "Torch IR graph" not in captured.out + captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fbnet.json"]


def test_a_failed_check_exits_2_without_a_file(tmp_path, capsys, monkeypatch):
    from nascore.deploy import export

    real = export._runner
    monkeypatch.setattr(export, "_runner", lambda fmt, path: (lambda x: [t + 1e-2 for t in real(fmt, path)(x)]))
    assert main(["export", str(arch_file(tmp_path, "fbnetv2")), "--format", "onnx", "--out",
                 str(tmp_path / "m.onnx")]) == 2
    assert "differs from eager PyTorch by 0.01" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fbnetv2.json"]


def test_int8_export_scores_both_files(trained, tmp_path, capsys, monkeypatch):
    import onnx
    import onnxruntime

    monkeypatch.chdir(tmp_path)  # ONNX Runtime's tools may write scratch files to the working directory
    out = tmp_path / "int8.onnx"
    assert main(["export", str(trained), "--format", "onnx", "--out", str(out), "--int8",
                 "--calibration-batches", "2"]) == 0
    text = capsys.readouterr().out
    assert "calibrated on 16 training images" in text and "batch dynamic" in text
    for key in ("classification/top1", "segmentation/miou", "latency, ms"):
        assert key in text
    proto = onnx.load(str(out))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = {p.key[len("nascore."):]: p.value for p in proto.metadata_props}
    int8 = json.loads(meta["int8"])
    assert int8["calibration_images"] == 16 and set(int8["val"]) >= {"classification/top1", "segmentation/miou"}
    # the recipe search: all-int8 first, then the first kind kept in float32, and so on; its choice printed
    tried = int8["recipes_vs_float32"]
    assert tried[0][0] == [] and len(tried[1][0]) == 1 and all(isinstance(r, float) for _, r in tried)
    assert "every node in int8" in text and ("int8 pays" in text or "int8 does not pay" in text)
    assert Arch.model_validate_json(meta["arch"]).space == "fbnetv5"
    # the written file is the int8 one and runs at any batch
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"input": torch.randn(3, 3, 32, 32).numpy()})
    assert [o.shape[0] for o in outputs] == [3, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["int8.onnx"]


def test_int8_recipe_keeps_in_float_the_kinds_that_are_faster_so():
    """The greedy from all-int8: a kind is kept in float32 when that is faster than the best so far by more than the
    margin, and stays kept; a gain within the margin (timing noise) is not taken."""
    from nascore.deploy.quantize import choose_recipe

    gains = {"Mul": 2.0, "Conv 1x1": -1.0, "Add": 0.1, "Conv depthwise": 1.0}
    recipe = choose_recipe(list(gains), [], lambda kinds: 10.0 - sum(gains[k] for k in kinds), margin=0.03)
    assert recipe.kept_float == ["Mul", "Conv depthwise"] and recipe.latency == 7.0
    assert recipe.tried == [([], 10.0), (["Mul"], 8.0), (["Mul", "Conv 1x1"], 9.0), (["Mul", "Add"], 7.9),
                            (["Mul", "Conv depthwise"], 7.0),
                            # each kept kind confirmed, the last first: with it, and without it
                            (["Mul", "Conv depthwise"], 7.0), (["Mul"], 8.0),
                            (["Mul", "Conv depthwise"], 7.0), (["Conv depthwise"], 9.0)]


def test_int8_recipe_drops_a_kind_that_paid_only_by_luck():
    """A trial that beat the margin by timing noise is caught when the kept kinds are timed again with and
    without each: the kind that pays stays, the lucky one goes."""
    from nascore.deploy.quantize import choose_recipe

    lucky = iter([0.8])  # the first time Conv 1x1 alone is kept, the timing happens to read 20% low

    def latency(kept: list[str]) -> float:
        ms = 10.0 - 3.0 * ("Mul" in kept)
        return ms * next(lucky, 1.0) if kept == ["Conv 1x1"] else ms

    recipe = choose_recipe(["Conv 1x1", "Mul"], [], latency, margin=0.03)
    assert recipe.tried[1] == (["Conv 1x1"], 8.0)  # taken by the search
    assert recipe.kept_float == ["Mul"] and recipe.latency == 7.0


def test_int8_recipe_keeps_the_leading_blocks_in_float_together():
    """Blocks kept in float32 cost a conversion at each end of every run of them: the first blocks, each a loss
    alone, pay as one run and are kept together (the best run found, lengthened until ``patience`` more bring no
    new best); a later block is then kept alone where it pays even so."""
    from nascore.deploy.quantize import choose_recipe

    gains = {"b0": 0.8, "b1": 0.8, "b2": 0.6, "b3": -0.2, "b4": -0.5, "b5": -0.1, "b6": 2.0, "b7": 0.1}
    order = list(gains)

    def latency(kept: list[str]) -> float:
        where = sorted(order.index(g) for g in kept if g in gains)
        runs = sum(1 for i, at in enumerate(where) if i == 0 or where[i - 1] != at - 1)
        return 10.0 - sum(gains[g] for g in kept if g in gains) + 1.0 * runs

    recipe = choose_recipe(["Conv 1x1"], order, latency, margin=0.03, patience=3)
    assert recipe.kept_float == ["b0", "b1", "b2", "b6"] and recipe.latency == pytest.approx(7.8)
    search, confirm = recipe.tried[:-4], recipe.tried[-4:]
    leading = [kept for kept, _ in search if kept and kept == order[:len(kept)]]
    assert leading == [order[:k] for k in range(1, 7)]  # b0..b2 the best run; three longer ones, then stop
    assert (["b0", "b1", "b2", "b5"], pytest.approx(9.9)) in search  # b5 alone costs its conversions
    assert search[-1] == (["b0", "b1", "b2", "b6", "b7"], pytest.approx(7.7))  # within the margin
    # confirmed: b6 with and without, then the leading run as one unit
    assert [kept for kept, _ in confirm] == [["b0", "b1", "b2", "b6"], ["b0", "b1", "b2"],
                                             ["b0", "b1", "b2", "b6"], ["b6"]]
    assert ["b1"] not in [kept for kept, _ in recipe.tried]


def test_int8_nodes_of_a_kind_stay_float(tmp_path, capsys):
    """``node_groups`` finds every depth-wise convolution of FBNet-A and groups the nodes by block, and quantizing
    with the depth-wise convolutions excluded leaves their weights in float32 while the other convolutions read int8
    weights."""
    import onnx

    from nascore.deploy.quantize import node_groups, prepare, quantize

    fp32, prepared, out = tmp_path / "a.onnx", tmp_path / "prepared.onnx", tmp_path / "int8.onnx"
    assert main(["export", "fbnet_a", "--format", "onnx", "--out", str(fp32), "--input-size", "32"]) == 0
    cls = get_registry().get("space", "fbnet")
    arch = cls.named_archs()["fbnet_a"]
    model = cls.for_arch(arch, input_size=32).build(arch)
    depthwise = sum(isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1 for m in model.modules())
    prepare(fp32, prepared)
    kinds = node_groups(prepared)
    assert len(kinds["Conv depthwise"]) == depthwise and kinds["Conv 1x1"]
    blocks = {g: set(nodes) for g, nodes in kinds.items() if g.startswith("block ")}
    # blocks at the outermost numbered modules (layers.N), the stem (a Sequential, stem.0 ...) one of them
    assert next(iter(blocks)) == "block model/backbone/stem"
    assert all(re.fullmatch(r"block model/backbone/layers\.\d+", g) for g in list(blocks)[1:] if "/backbone/" in g)
    for node in kinds["Conv depthwise"]:  # each in one block, the block of its module path
        assert [g for g, nodes in blocks.items() if node in nodes] == [next(g for g in blocks
                                                                            if node.startswith("/" + g[6:] + "/"))]
    quantize(prepared, out, [torch.randn(1, 3, 32, 32)], kinds["Conv depthwise"])
    graph = onnx.load(str(out)).graph
    made_by = {o: node.op_type for node in graph.node for o in node.output}
    weights = {node.name: made_by.get(node.input[1], "initializer") for node in graph.node if node.op_type == "Conv"}
    assert {weights[n] for n in kinds["Conv depthwise"]} == {"initializer"}
    assert {weights[n] for n in kinds["Conv 1x1"]} == {"DequantizeLinear"}


def test_int8_hardswish_nodes_belong_to_their_block(tmp_path):
    """ONNX Runtime's pre-processing leaves hardswish's inlined nodes unnamed; ``prepare`` names them after their
    module, so ``node_groups`` puts each with its block (a block kept in float32 keeps its activations), and the
    stem, outside the numbered blocks, is a block of its own, the first."""
    import onnx

    from nascore.deploy.quantize import node_groups, prepare

    fp32, prepared = tmp_path / "f1.onnx", tmp_path / "prepared.onnx"
    assert main(["export", "fbnetv2_f1", "--format", "onnx", "--out", str(fp32), "--input-size", "32"]) == 0
    prepare(fp32, prepared)
    graph = onnx.load(str(prepared)).graph
    names = [node.name for node in graph.node]
    assert all(names) and len(set(names)) == len(names)
    groups = node_groups(prepared)
    blocks = {name: group for group, nodes in groups.items() if group.startswith("block ") for name in nodes}
    made_by = {o: node for node in graph.node for o in node.output}
    hardswish = [node for node in graph.node if node.op_type == "Mul"
                 and {made_by[i].op_type for i in node.input if i in made_by} == {"Conv", "HardSigmoid"}]
    assert hardswish
    for mul in hardswish:  # in the block of the convolution it follows
        conv = next(made_by[i] for i in mul.input if made_by.get(i) is not None and made_by[i].op_type == "Conv")
        assert blocks[mul.name] == blocks[conv.name]
    first_conv = next(node.name for node in graph.node if node.op_type == "Conv")
    assert blocks[first_conv] == next(g for g in groups if g.startswith("block ")) and "blocks." not in first_conv


class _Gated(torch.nn.Module):
    """A convolution, a squeeze-excite style pooling (and a channel mean, which is not one) and a hard-sigmoid
    gate: the graph the int8 rewrites are for."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.project = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        return self.project(torch.nn.functional.hardsigmoid(y * y.mean((2, 3), keepdim=True))), y.mean(1, keepdim=True)


def _ort(path: Path, x: torch.Tensor, also: str | None = None) -> list:
    """The ONNX file's outputs for ``x`` (and the tensor named ``also``, made an output too)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    if also is not None:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(also))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})


def test_int8_pooling_and_hard_sigmoid_run_in_uint8(tmp_path, monkeypatch):
    """``prepare`` turns the spatial mean into the GlobalAveragePool it equals (the channel mean stays a ReduceMean;
    same outputs), and ``quantize`` runs each quantized HardSigmoid as a DequantizeLinear + Add, which gives the gate
    of the file quantized without that rewrite to within one step of its uint8 output."""
    import onnx

    from nascore.deploy import quantize as q

    fp32, prepared = tmp_path / "f.onnx", tmp_path / "prepared.onnx"
    torch.onnx.export(_Gated().eval(), (torch.randn(1, 3, 8, 8),), str(fp32), input_names=["input"], dynamo=False)
    q.prepare(fp32, prepared)
    ops = [node.op_type for node in onnx.load(str(prepared)).graph.node]
    assert ops.count("GlobalAveragePool") == 1 and ops.count("ReduceMean") == 1 and "HardSigmoid" in ops
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for a, b in zip(_ort(fp32, x[:1]), _ort(prepared, x[:1])):
        assert abs(a - b).max() <= 1e-5 * max(1.0, abs(a).max())
    rewritten, plain = tmp_path / "rewritten.onnx", tmp_path / "plain.onnx"
    q.quantize(prepared, rewritten, list(x.split(1)))
    assert "HardSigmoid" not in [node.op_type for node in onnx.load(str(rewritten)).graph.node]
    monkeypatch.setattr(q, "_hardsigmoid_as_add", lambda graph: 0)
    q.quantize(prepared, plain, list(x.split(1)))
    assert "HardSigmoid" in [node.op_type for node in onnx.load(str(plain)).graph.node]
    gate = next(node.output[0] for node in onnx.load(str(plain)).graph.node if node.op_type == "QuantizeLinear"
                and node.input[0] == "/HardSigmoid_output_0")
    got, want = _ort(rewritten, x[:1], gate)[-1], _ort(plain, x[:1], gate)[-1]
    assert got.dtype == want.dtype == np.uint8 and np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_int8_refusals_exit_2_without_a_file(trained, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    for args, named in [([str(arch_file(tmp_path, "fbnet")), "--format", "onnx", "--int8"], "not an arch"),
                        ([str(trained), "--format", "torchscript", "--int8"], "use --format onnx"),
                        ([str(trained), "--format", "onnx", "--int8", "--calibration-batches", "0"],
                         "--calibration-batches must be at least 1")]:
        assert main(["export", *args, "--out", str(out)]) == 2
        assert named in capsys.readouterr().err
        assert not out.exists()


@pytest.mark.parametrize("fmt", ["onnx", "exported-program", "torchscript"])
def test_measure_an_exported_file(tmp_path, capsys, fmt):
    out = tmp_path / f"m.{fmt}"
    assert main(["export", str(arch_file(tmp_path, "fbnet")), "--format", fmt, "--out", str(out), "--batch", "2"]) == 0
    capsys.readouterr()
    assert main(["measure", str(out), "--min-run-time", "0.05"]) == 0
    text = capsys.readouterr().out
    runtime = "onnxruntime" if fmt == "onnx" else "torch"
    assert f"latency ({runtime})" in text and f"{fmt}, float32" in text and "batch 2, input 32x32" in text
    assert "measured median" in text
    for args, named in [(["--batch", "3"], "fixed batch of 2"), (["--lut", "x.json"], "--lut applies to an arch"),
                        (["--backend", "onnxruntime" if fmt != "onnx" else "torch"], "runs on")]:
        assert main(["measure", str(out), *args]) == 2
        assert named in capsys.readouterr().err


def test_measure_takes_any_onnx_file_and_refuses_broken_ones(tmp_path, capsys):
    path = tmp_path / "plain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Conv2d(3, 4, 3), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False,
                          input_names=["pixels"])
    assert main(["measure", str(path), "--min-run-time", "0.05"]) == 0
    text = capsys.readouterr().out
    assert "onnx, float32" in text and "batch 1, input 8x8" in text
    (tmp_path / "broken.onnx").write_bytes(b"\x00not a protobuf at all" * 10)
    zipped = tmp_path / "archive.pt2"
    import zipfile

    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("a/archive_format", "pt2")
        z.writestr(f"a/extra/{META_FILE}", "[1, 2]")
    for bad, named in [(tmp_path / "broken.onnx", "not a readable ONNX file"),
                       (zipped, f"lacks a readable {META_FILE}")]:
        assert main(["measure", str(bad)]) == 2
        assert named in capsys.readouterr().err


def test_measure_an_int8_file(trained, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["export", str(trained), "--format", "onnx", "--out", str(out), "--int8",
                 "--calibration-batches", "1", "--int8-recipe", "all"]) == 0
    assert "every node in int8" not in capsys.readouterr().out  # no recipe search
    assert main(["measure", str(out), "--batch", "2", "--min-run-time", "0.05"]) == 0  # dynamic batch
    text = capsys.readouterr().out
    assert "quantized (int8)" in text and "batch 2, input 32x32" in text

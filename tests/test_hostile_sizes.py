"""Hostile input, continued (``test_hostile_inputs.py``): sizes, shapes and indices that a file declares. Every
reader of the newer artifacts (files given to ``nascore measure``, performance datasets and their records, predictor
files, run directories given to ``nascore report`` and ``nascore export``) checks them against a cap or against the
data before it allocates anything: exit status 2, a message that names the file and the problem, no traceback,
nothing written, within seconds.

A memory guard caps the process's address space a few GiB above what it maps when the test starts, so a reader that
allocates what a file declares fails the test at once (an allocator error instead of the expected message) rather
than taking the machine's memory; the hang guard of ``test_hostile_inputs`` turns a hang into a failure.
"""
from __future__ import annotations

import json
import os
import resource
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from nascore.arch import Arch
from nascore.fileio import save_checkpoint
from nascore.performance.graph import NUMERIC_FEATURES
from nascore.spec import validate_spec
from nascore.task import build_network
from test_bad_inputs import FBNET_C, tiny_spec
from test_hostile_inputs import GiB, _huge, hang_guard, rejected  # noqa: F401 - hang_guard: an autouse fixture

TERA = 10**12  # what a hostile file declares: 4 TB of float32, more than any machine has


def _mapped() -> int | None:
    """Bytes this process maps now (VmSize), or None where /proc does not say."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration):
        return None


@pytest.fixture(autouse=True)
def memory_guard():
    """The address space capped 4 GiB above what the process maps now, for the test's duration."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = _mapped()
    if mapped is None:
        yield
        return
    limit = mapped + 4 * GiB
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False)


# -- nascore measure: exported files and arch files --------------------------------------------------------------
def _onnx(path: Path, dims: list[int | None]) -> None:
    """An ONNX graph (Identity) whose one input declares ``dims`` (None: a dynamic axis)."""
    import onnx
    from onnx import TensorProto, helper

    shape = [d if d is not None else "N" for d in dims]
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _onnx_graph(path: Path, nodes: list, output_type: int | None = None) -> None:
    """An ONNX graph of ``nodes`` from a [1, 1] float ``input`` to ``output`` (of ``output_type``)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info("output", output_type or TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _expand_bomb(path: Path) -> None:
    """A graph that expands its one input to 10**12 values (the runtime's allocation, asked for by the graph)."""
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [10**6, 10**6])
    _onnx_graph(path, [helper.make_node("Constant", [], ["s"], value=shape),
                       helper.make_node("Expand", ["input", "s"], ["big"]),
                       helper.make_node("ReduceSum", ["big"], ["output"], keepdims=0)])


def _mistyped(path: Path) -> None:
    from onnx import TensorProto, helper

    _onnx_graph(path, [helper.make_node("Relu", ["input"], ["output"])], TensorProto.INT64)


def _scripted(path: Path, meta: dict | None = None, bomb: bool = False) -> None:
    """A TorchScript archive (an Identity) with ``nascore.json`` as ``nascore export`` stores it; ``bomb``: that
    entry compressed from 64 MiB of blanks (a small file whose entry declares 64 MiB)."""
    text = json.dumps(meta or {}).encode()
    with warnings.catch_warnings():  # torch.jit.save's deprecation: nascore export still writes TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(nn.Identity()), str(path), _extra_files={"nascore.json": text})
    if not bomb:
        return
    with zipfile.ZipFile(path) as z:
        entries = {i.filename: z.read(i.filename) for i in z.infolist()}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            if name.endswith("/extra/nascore.json"):
                z.writestr(name, b" " * (64 << 20) + data, compress_type=zipfile.ZIP_DEFLATED)
            else:
                z.writestr(name, data)


def _meta(**changes) -> dict:
    return {"input_size": "32", "in_channels": "3", "batch": "1", "dynamic_batch": "false", **changes}


def _arch_file(path: Path, **config) -> None:
    path.write_text(json.dumps({**FBNET_C, "config": {**FBNET_C.get("config", {}), **config}}))


MEASURE: dict[str, tuple[Callable[[Path], None], list[str], tuple[str, ...]]] = {
    "onnx-batch": (lambda ws: _onnx(ws / "m.onnx", [TERA, 3, 32, 32]), [],
                   ("m.onnx declares an input of 1000000000000x3x32x32 (3,072,000,000,000,000 values)",
                    "expected at most")),
    "onnx-zero-axis": (lambda ws: _onnx(ws / "m.onnx", [1, 3, 0, 32]), [],
                       ("m.onnx: input 'input' has an axis of size 0",)),
    "onnx-dynamic-batch": (lambda ws: _onnx(ws / "m.onnx", [None, 3, 32, 32]), ["--batch", str(TERA)],
                           ("--batch 1000000000000: m.onnx would take an input of 1000000000000x3x32x32",)),
    "onnx-huge-file": (lambda ws: _huge(ws / "m.onnx"), [], ("m.onnx is 3.0 GiB; expected at most 2.0 GiB",)),
    "onnx-expand-bomb": (lambda ws: _expand_bomb(ws / "m.onnx"), [],
                         ("m.onnx cannot be run on onnxruntime: Fail: ", "Failed to allocate memory")),
    "onnx-mistyped": (lambda ws: _mistyped(ws / "m.onnx"), [], ("m.onnx cannot be run on onnxruntime: Fail: ",
                                                                "does not match expected type")),
    "torchscript-input": (lambda ws: _scripted(ws / "m.pt", _meta(input_size=str(10**6), batch=str(10**6))), [],
                          ("m.pt declares an input of 1000000x3x1000000x1000000",)),
    "torchscript-negative": (lambda ws: _scripted(ws / "m.pt", _meta(in_channels="-3")), [],
                             ("m.pt lacks a readable nascore.json",)),
    "torchscript-meta-bomb": (lambda ws: _scripted(ws / "m.pt", _meta(), bomb=True), [],
                              ("m.pt holds a nascore.json of 64.0 MiB; expected at most 1.0 MiB",)),
    "arch-head": (lambda ws: _arch_file(ws / "m.json", head_channels=TERA), [],
                  ("arch file m.json describes a network of ", "parameters; expected at most 1,073,741,824")),
    "arch-layers": (lambda ws: _arch_file(ws / "m.json", stages=[[16, 10**9, 1]]), [],
                    ("arch file m.json: arch config is not valid for space 'fbnet':\n  config.stages: "
                     "stage 0 is [16, 1000000000, 1]: expected [channels >= 1, layers 1 to 64, stride 1 or 2]",)),
    "arch-input-size": (lambda ws: _arch_file(ws / "m.json", input_size=10**6), [],
                        ("arch file m.json: input_size 1000000; expected at most 8192",)),
}


@pytest.mark.parametrize("case", list(MEASURE))
def test_measure(case, ws, capsys):
    make, flags, expected = MEASURE[case]
    make(ws)
    name = next(p.name for p in ws.iterdir())
    rejected(["measure", name, "--min-run-time", "0.01", *flags], ws, capsys, *expected)


# -- performance datasets and their records ------------------------------------------------------------------
def _graph(ops: int = 3) -> dict:
    return {"ops": ["input", *["conv"] * (ops - 2), "output"], "features": [[0.1] * len(NUMERIC_FEATURES)] * ops,
            "edges": [list(range(ops - 1)), list(range(1, ops))]}


def _perf_dataset(root: Path, cache_dir: Path, archs: int = 3) -> Path:
    """A performance dataset as ``bench collect`` writes it, made by hand (nothing trained): ``archs`` archs of
    fbnet, each with a small graph and a classification label."""
    spec = validate_spec(tiny_spec(cache_dir))
    choices = [{**FBNET_C["choices"], "layer01": op} for op in ("k3_e1", "k3_e3", "k5_e6", "skip")][:archs]
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "format": "nascore-performance-dataset", "version": 1, "seed": 0, "archs": archs,
        "space": {"name": "fbnet", "config": spec.space.config.model_dump(mode="json")}, "input_size": 32,
        "in_channels": 3, "tasks": {"classification": {"label": "val/classification/top1", "higher_is_better": True}},
        "spec": spec.dump(), "plan": [{"index": i, "choices": c} for i, c in enumerate(choices)]}))
    (root / "archs").mkdir()
    for i, c in enumerate(choices):
        (root / "archs" / f"{i:05d}.json").write_text(json.dumps({
            "format": "nascore-performance-record", "version": 1, "index": i,
            "arch": {"space": "fbnet", "config": spec.space.config.model_dump(mode="json"), "choices": c},
            "macs": 10**6 * (i + 1), "params": 1000, "latency_ms": None, "proxies": {"synflow": 1.0, "naswot": 2.0},
            "graph": _graph(3 + i), "tasks": {"classification": {"metrics": {"val/classification/top1": 0.1 * i},
                                                                 "label": 0.1 * i, "seconds": 1.0}}}))
    return root


def _edit(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _record_graph(**graph) -> Callable[[dict], None]:
    return lambda d: d["graph"].update(graph)


DATASET: dict[str, tuple[str, Callable[[dict], None], tuple[str, ...]]] = {
    "manifest-archs": ("dataset.json", lambda d: d.update(archs=TERA),
                       ("data/dataset.json: plan must list archs 0..999999999999 in order",)),
    "record-edge-index": ("archs/00001.json", _record_graph(edges=[[0, TERA], [1, 0]]),
                          ("data/archs/00001.json: graph.edges must be two lists of equal length of node indices "
                           "below 4",)),
    "record-negative-edge": ("archs/00001.json", _record_graph(edges=[[-1], [0]]), ("graph.edges must be",)),
    "record-edge-lengths": ("archs/00001.json", _record_graph(edges=[[0, 1], [1]]), ("graph.edges must be",)),
    "record-feature-rows": ("archs/00001.json", _record_graph(features=[[0.0] * len(NUMERIC_FEATURES)] * 9),
                            ("data/archs/00001.json: graph.features must hold 4 rows of 12 numbers",)),
    "record-feature-width": ("archs/00001.json", _record_graph(features=[[0.0] * 10**5] * 4),
                             ("graph.features must hold 4 rows of 12 numbers",)),
}


@pytest.mark.parametrize("case", list(DATASET))
def test_performance_dataset(case, ws, cache_dir, capsys):
    file, edit, expected = DATASET[case]
    _edit(_perf_dataset(ws / "data", cache_dir) / file, edit)
    rejected(["predictor", "fit", "data", "--out", "p.pt", "--set", "epochs=1"], ws, capsys, *expected)


def test_the_dataset_the_cases_edit_is_valid(ws, cache_dir, capsys):
    """Without an edit the hand-made dataset fits (so each case is refused for its edit alone)."""
    _perf_dataset(ws / "data", cache_dir)
    assert main_ok(["predictor", "fit", "data", "--out", "p.pt", "--set", "epochs=1"], capsys)
    assert main_ok(["predictor", "eval", "p.pt", "data"], capsys)


def main_ok(argv: list[str], capsys) -> bool:
    from nascore.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, (out, err)
    return True


# -- predictor files ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predictor_file(tmp_path_factory, cache_dir) -> tuple[Path, dict]:
    """A dataset and an aio-p predictor file fitted on it (one epoch), and the file's raw content."""
    root = tmp_path_factory.mktemp("predictor")
    from nascore.performance.perfdata import PerfDataset
    from nascore.performance.predictors.fitting import fit_file

    data = _perf_dataset(root / "data", cache_dir)
    fit_file([PerfDataset.read(data)], "aio-p", {"epochs": 1}).save(root / "p.pt")
    return data, torch.load(root / "p.pt", weights_only=True)


def _set_config(**config) -> Callable[[dict], None]:
    return lambda raw: raw["config"].update(config)


def _expanded_state(raw: dict) -> None:
    raw["tasks"]["classification"]["state"]["feature_mean"] = torch.zeros(1).expand(TERA)


PREDICTOR: dict[str, tuple[Callable[[dict], None], tuple[str, ...]]] = {
    "config-width": (_set_config(width=1 << 15),
                     ("predictor file p.pt: tasks.classification.state cannot be loaded by predictor 'aio-p'",
                      "size mismatch for embed.weight")),
    "config-layers": (_set_config(layers=10**9), ("predictor file p.pt: its config block is not valid:\n  "
                                                  "config.layers: Input should be less than or equal to 64",)),
    "config-mlp-layers": (_set_config(mlp_layers=10**9), ("mlp_layers: Input should be less than or equal to 64",)),
    "dataset-size": (lambda raw: raw["dataset"].update(num_train=TERA),
                     ("predictor file p.pt: its dataset block is not valid:\n  dataset: num_train 1000000000000 at "
                      "image_size 32 is 5722045.9 GiB in memory; expected at most 16.0 GiB",)),
    "expanded-tensor": (_expanded_state, ("predictor file p.pt holds a tensor of 1,000,000,000,000 values stored in "
                                          "1; expected tensors that hold their values",)),
}


@pytest.mark.parametrize("case", list(PREDICTOR))
def test_predictor_file(case, predictor_file, ws, capsys):
    import shutil

    data, raw = predictor_file
    shutil.copytree(data, ws / "data")
    raw = {**raw, "config": dict(raw["config"]), "dataset": dict(raw["dataset"]),
           "tasks": {t: {**e, "state": dict(e["state"])} for t, e in raw["tasks"].items()}}
    edit, expected = PREDICTOR[case]
    edit(raw)
    torch.save(raw, ws / "p.pt")
    rejected(["predictor", "eval", "p.pt", "data"], ws, capsys, *expected)


# -- nascore report: a run directory -----------------------------------------------------------------------------
def _history(decisions: int = 2, options: int = 3, epochs: int = 2) -> list[dict]:
    probs = [1.0 / options] * options
    return [{"epoch": e, "groups": {"shared": {f"d{i}": probs for i in range(decisions)}}} for e in range(epochs)]


def _rows(*rows: dict) -> str:
    return "".join(json.dumps({"phase": "search", "epoch": 0, **r}) + "\n" for r in rows)


def _run_dir(ws: Path, rows: str = _rows({"loss": 1.0}), history: list[dict] | None = None) -> None:
    run = ws / "out"
    run.mkdir()
    (run / "metrics.jsonl").write_text(rows)
    if history is not None:
        save_checkpoint({"epoch": 0, "state": {"decisions": history}}, run / "checkpoints" / "search.pt")


REPORT: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "history-options": (lambda ws: _run_dir(ws, history=_history(1, 10**6, 1)),
                        ("out/checkpoints/search.pt: decision 'd0' has 1000000 options; the report draws at most "
                         "64",)),
    "history-decisions": (lambda ws: _run_dir(ws, history=_history(10**5, 2, 1)),
                          ("out/checkpoints/search.pt: group 'shared' has 100000 decisions; the report draws at "
                           "most 256",)),
    "history-values": (lambda ws: _run_dir(ws, history=_history(64, 64, 1000)),
                       ("out/checkpoints/search.pt: its distributions hold 4,096,000 probabilities over 1000 "
                        "epochs; the report draws at most 2,000,000",)),
    "history-groups": (lambda ws: _run_dir(ws, history=[{"epoch": 0, "groups": {f"g{i}": {"d": [1.0]}
                                                                                for i in range(10**5)}}]),
                       ("out/checkpoints/search.pt: epoch 0 has 100000 groups of decisions; the report draws at "
                        "most 64",)),
    "history-ragged": (lambda ws: _run_dir(ws, history=[*_history(2, 60, 1), *_history(2, 3, 2)[1:]]),
                       ("out/checkpoints/search.pt: decision 'd0' has 60 options after epoch 0 and 3 after epoch 1; "
                        "expected the same options after every epoch",)),
    "metrics-phases": (lambda ws: _run_dir(ws, "".join(json.dumps({"phase": f"p{i}", "epoch": 0, "loss": 1.0})
                                                       + "\n" for i in range(1000))),
                       ("metrics file out/metrics.jsonl holds 1000 phases; the report draws at most 64",)),
    "metrics-series": (lambda ws: _run_dir(ws, _rows({f"m{i}": 1.0 for i in range(10**4)})),
                       ("metrics file out/metrics.jsonl: phase 'search' has 10000 numeric series; the report draws "
                        "at most 256",)),
    "metrics-top-choices": (lambda ws: _run_dir(ws, "".join(json.dumps({"phase": "search", "epoch": e, "top_choices":
                                                                        {f"d{e}": "x"}}) + "\n"
                                                            for e in range(2000))),
                            ("metrics file out/metrics.jsonl: phase 'search' has top choices of 2000 decisions "
                             "over 2000 epochs; the report tabulates at most 1,000,000",)),
}


@pytest.mark.parametrize("case", list(REPORT))
def test_report(case, ws, capsys):
    REPORT[case][0](ws)
    rejected(["report", "out"], ws, capsys, *REPORT[case][1])


def test_report_of_a_run_whose_spec_declares_a_billion_layers(ws, cache_dir, capsys):
    """The run's spec names the options of the decisions (a nicety): a space it declares with 10**9 layers is not
    built; the page is written with numbered options."""
    _run_dir(ws, history=_history())
    spec = tiny_spec(cache_dir)
    spec["space"] = {**spec["space"], "stages": [[16, 10**9, 1]]}
    (ws / "out" / "spec.yaml").write_text(dump(spec))
    assert main_ok(["report", "out"], capsys)
    assert "d0" in (ws / "out" / "report.html").read_text()


# -- nascore export: a run directory -----------------------------------------------------------------------------
def _trained_run(ws: Path, cache_dir: Path, spec_changes: dict | None = None, **arch_config) -> None:
    """``out/``: a run directory with its spec and a ``train_model.pt`` of the tiny spec's network (untrained
    weights: nothing is trained); ``spec_changes`` change the spec.yaml beside it, ``arch_config`` the arch that
    the checkpoint holds."""
    raw = tiny_spec(cache_dir)
    spec = validate_spec(raw)
    arch = Arch(space="fbnet", config=spec.space.config.model_dump(mode="json"), choices=FBNET_C["choices"])
    space = spec.space.cls.for_arch(arch)
    network = build_network(space.build(arch), [t.create() for t in spec.tasks], spec.dataset.create().info())
    run = ws / "out"
    run.mkdir()
    save_checkpoint({"arch": {**arch.model_dump(mode="json"), "config": {**arch.config, **arch_config}},
                     "network": network.state_dict()}, run / "train_model.pt")
    for key, value in (spec_changes or {}).items():
        raw[key] = value
    (run / "spec.yaml").write_text(dump(raw))


EXPORT: dict[str, tuple[dict, dict, tuple[str, ...]]] = {
    "arch-head": ({}, {"head_channels": TERA}, ("arch file out/train_model.pt describes a network of ",
                                                "expected at most 1,073,741,824")),
    "spec-dataset-size": ({"dataset": {**tiny_spec(Path("cache"))["dataset"], "num_train": TERA}}, {},
                          ("out/spec.yaml is not a valid spec:\n  dataset: num_train 1000000000000 at image_size 32 "
                           "is",)),
    "spec-classes": ({"tasks": [{"name": "classification", "num_classes": 10**9}]}, {},
                     ("trained model out/train_model.pt does not fit its arch and the tasks of out/spec.yaml",
                      "size mismatch for heads.classification")),
}


@pytest.mark.parametrize("case", list(EXPORT))
def test_export(case, ws, cache_dir, capsys):
    spec_changes, arch_config, expected = EXPORT[case]
    _trained_run(ws, cache_dir, spec_changes, **arch_config)
    rejected(["export", "out", "--format", "onnx", "--out", "m.onnx"], ws, capsys, *expected)


def test_export_builds_no_data_a_float32_file_does_not_need(ws, tmp_path, capsys):
    """A run's spec whose dataset takes 12 GiB to generate, more than the memory guard leaves: a float32 export
    neither generates nor caches it (only --int8 calibrates on data)."""
    cache = tmp_path / "cache"
    dataset = {**tiny_spec(cache)["dataset"], "num_train": 2 * 10**6, "num_val": 2 * 10**6}
    _trained_run(ws, cache, {"dataset": dataset})
    assert main_ok(["export", "out", "--format", "onnx", "--out", "m.onnx"], capsys)
    assert (ws / "m.onnx").is_file()
    assert not cache.exists() or not os.listdir(cache)

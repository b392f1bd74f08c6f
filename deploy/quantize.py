"""``nascore export --int8``: ONNX Runtime's post-training static quantization of a checked float32 ONNX export.

The float32 file (dynamic batch axis, checked against eager PyTorch) is pre-processed (shape inference and graph
optimisation, ``quant_pre_process``) and quantized in QDQ format with per-channel int8 weights and uint8
activations (ONNX Runtime's default for x86 CPUs), calibrated by min-max on ``K`` shuffled batches of the run's
training split. Two exact graph rewrites let uint8 kernels run what otherwise runs in float between a
DequantizeLinear and a QuantizeLinear: the spatial ``ReduceMean`` of squeeze-excite and heads becomes the
``GlobalAveragePool`` it equals, and each quantized ``HardSigmoid`` (hardswish and the SE gate) becomes a
DequantizeLinear with its slope folded into the scale plus an ``Add`` (one ``QLinearAdd``; the clip is the
QuantizeLinear's saturation). Both files are then scored on the validation split through ONNX Runtime with the
tasks' own metrics, and timed at batch 1 on one thread.

Which nodes are quantized is measured on this machine (:func:`choose_recipe`): int8 pays for some nodes and costs
for others (a depth-wise convolution, or a block whose hardswish and SE run in float between QuantizeLinear and
DequantizeLinear pairs, can be slower than in float), so starting from everything quantized, each group of nodes is
kept in float32 where that makes the file faster by more than the timing noise: first each kind (convolutions split
into depth-wise, 1x1 and kxk; every other op type the quantizer handles by its name), then the leading blocks as one
run (the stem and the first blocks, at high resolution: each block kept alone adds a conversion at either end), then
each later block (the nodes under one numbered module of the network, e.g. ``blocks.5``, activations included);
each group kept is then timed again with and without it, and dropped unless it still pays. The CLI says plainly
when even the best recipe is not faster than float32.

ONNX Runtime's path rather than torch.ao's PT2E: the result is a plain ONNX file any ONNX Runtime runs, and its
quantizer is the one ONNX Runtime maintains for its own kernels.
"""
from __future__ import annotations

import json
import re
import shutil
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nascore.costs.timing import OnnxRuntimeBackend
from nascore.data import loader
from nascore.errors import NascoreError, first_line
from nascore.hookspecs import Int8Result
from nascore.loops import evaluate

from .network import Data, ExportSource, Flat, flatten, unflatten

#: seconds of timing per file
MIN_RUN_TIME = 1.0
#: a recipe is kept only when it is this much faster than the best so far (the spread of repeated timings here)
MARGIN = 0.03
#: leading-block recipes tried past the best one before the search stops lengthening them
PATIENCE = 3
#: interleaved timing rounds of the files compared, and seconds of timing per file and round in the search
ROUNDS, TRIAL_TIME = 3, 0.3


class OnnxNetwork(nn.Module):
    """An ONNX file run by ONNX Runtime with the nested outputs of ``template`` (a network output), so the tasks'
    own losses and metrics score it."""

    def __init__(self, path: Path, template: Any):
        super().__init__()
        self.session, self.template = OnnxRuntimeBackend(threads=0).load(str(path)), template

    def forward(self, x: Tensor) -> Any:
        outputs = self.session.run(None, {"input": x.cpu().numpy()})
        return unflatten(self.template, iter(torch.from_numpy(o) for o in outputs))


def calibration_batches(data: Data, k: int) -> list[Tensor]:
    """``k`` shuffled batches of the training split (seeded by the run's seed), as the network takes them."""
    batches = loader(data.parts.train_set, data.batch_size, data.parts.collate, shuffle=True, seed=data.parts.seed)
    images = [images for _, (images, _) in zip(range(k), batches)]
    if not images or not isinstance(images[0], Tensor):
        raise NascoreError("int8 calibration needs a dataset whose batches are image tensors")
    return images


def prepare(fp32: Path, prepared: Path) -> None:
    """ONNX Runtime's pre-processing of the float32 file for quantization (shape inference, graph optimisation)."""
    from onnxruntime.quantization import quant_pre_process  # ONNX Runtime: only when a file runs on it

    try:
        # ONNX shape inference: the symbolic one (for transformers) gives up on multi-path fbnetv5 graphs
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001 - the quantizer rejects the graph: say so, write nothing
        raise _failed(exc) from None
    _rewrite(prepared, _name_nodes)
    _rewrite(prepared, _pool_as_global)


def quantize(prepared: Path, out: Path, images: list[Tensor], exclude: list[str] = ()) -> None:
    """Write the int8 (QDQ) model of the pre-processed ONNX file ``prepared`` to ``out``, calibrated on ``images``,
    the nodes named in ``exclude`` left in float32."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(images)

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch.numpy()}

    try:
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=list(exclude))
    except Exception as exc:  # noqa: BLE001 - as above
        raise _failed(exc) from None
    _rewrite(out, _hardsigmoid_as_add)


def _rewrite(path: Path, rewrite: Callable[[Any], int]) -> None:
    """Apply the graph rewrite ``rewrite`` (it returns how many nodes it replaced) to the ONNX file ``path``."""
    import onnx

    model = onnx.load(str(path))
    if rewrite(model.graph):
        onnx.save(model, str(path))


def _scalar(initializers: dict[str, Any], name: str) -> Any:
    """The initializer ``name`` as a NumPy scalar of its own dtype; None if it is not one value."""
    from onnx import numpy_helper

    value = numpy_helper.to_array(initializers[name]) if name in initializers else None
    return None if value is None or value.size != 1 else value.reshape(())[()]


def _name_nodes(graph: Any) -> int:
    """Name each unnamed node after the module call it computes, so a recipe can keep it in float32 with its
    block: the exporter leaves unnamed the nodes it inlines from a function (hardswish's ``HardSigmoid`` and ``Mul``);
    the call's name is their output's (``/model/.../act/HardSwish_output_0``) or, for an intermediate, the name of
    the node reading it. The op type is appended, and a count where that name is taken."""
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    calls: dict[int, str] = {}

    def call(node: Any) -> str:
        if node.name:
            return node.name
        if id(node) not in calls:
            calls[id(node)] = ""  # a cycle cannot occur in a valid graph; this guards a hostile one
            path = next((re.sub(r"_output_\d+$", "", o) for o in node.output if o.startswith("/")), None)
            reader = next((r for o in node.output for r in readers.get(o, [])), None)
            calls[id(node)] = path if path is not None else call(reader) if reader is not None else ""
        return calls[id(node)]

    taken = {node.name for node in graph.node}
    done = 0
    for node in graph.node:
        if node.name:
            continue
        base = f"{call(node)}/{node.op_type}"
        name, count = base, 1
        while name in taken:
            count += 1
            name = f"{base}_{count}"
        node.name = name
        taken.add(name)
        done += 1
    return done


def _pool_as_global(graph: Any) -> int:
    """``ReduceMean`` over the two spatial axes, keeping them (squeeze-excite's and the heads' pooling, as PyTorch
    exports ``x.mean((2, 3), keepdim=True)``), as the ``GlobalAveragePool`` it equals: ONNX Runtime runs that one
    in uint8 (``QLinearGlobalAveragePool``), where a ReduceMean runs in float between a DequantizeLinear of the
    whole feature map and a QuantizeLinear."""
    from onnx import helper, numpy_helper

    shapes = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.value_info, *graph.input]}
    initializers = {t.name: t for t in graph.initializer}
    done = 0
    for i, node in enumerate(list(graph.node)):  # each replaced in place: the indices hold
        if node.op_type != "ReduceMean" or shapes.get(node.input[0]) != 4:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1] in initializers:  # opset 18: axes an input
            axes = numpy_helper.to_array(initializers[node.input[1]]).tolist()
        if attrs.get("keepdims", 1) != 1 or sorted(int(a) % 4 for a in axes or []) != [2, 3]:
            continue
        graph.node.remove(node)
        graph.node.insert(i, helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                              name=node.name))
        done += 1
    return done


def _hardsigmoid_as_add(graph: Any) -> int:
    """Each ``DequantizeLinear(x; s, z) -> HardSigmoid(alpha, beta) -> QuantizeLinear(h)`` of a QDQ file as
    ``DequantizeLinear(x; alpha * s, z) + beta -> QuantizeLinear(h)``, which ONNX Runtime runs as one uint8
    ``QLinearAdd`` (hardswish and the squeeze-excite gate have no uint8 kernel: they ran in float between the two
    conversions). Equal up to rounding: HardSigmoid is ``clip(alpha * x + beta, 0, 1)``, and the clip is the
    QuantizeLinear's own saturation where its range is within [0, 1] (zero point 0, ``255 * scale <= 1``), the only
    case rewritten."""
    from onnx import TensorProto, helper, numpy_helper

    made_by = {o: node for node in graph.node for o in node.output}
    initializers = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    read_by: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            read_by.setdefault(name, []).append(node)
    done = 0
    for node in list(graph.node):
        if node.op_type != "HardSigmoid":
            continue
        dq, readers = made_by.get(node.input[0]), read_by.get(node.output[0], [])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
        if (dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or len(readers) != 1
                or readers[0].op_type != "QuantizeLinear" or len(readers[0].input) < 3 or alpha <= 0 or beta <= 0):
            continue
        x_scale, q_scale, q_zero = (_scalar(initializers, n) for n in (dq.input[1], *readers[0].input[1:3]))
        if x_scale is None or q_scale is None or q_zero != 0 or 255 * q_scale > 1 + 1e-6:
            continue
        name = node.name or node.output[0]
        graph.initializer.extend([
            numpy_helper.from_array(np.asarray(x_scale * np.float32(alpha)), f"{name}/alpha_scale"),
            helper.make_tensor(f"{name}/beta_q", TensorProto.UINT8, [], [1]),
            helper.make_tensor(f"{name}/beta_scale", TensorProto.FLOAT, [], [beta]),
            helper.make_tensor(f"{name}/beta_zero", TensorProto.UINT8, [], [0])])
        i = list(graph.node).index(node)
        graph.node.remove(node)
        for j, new in enumerate([
                helper.make_node("DequantizeLinear", [dq.input[0], f"{name}/alpha_scale", dq.input[2]],
                                 [f"{name}/alpha_x"], name=f"{name}/alpha_x"),
                helper.make_node("DequantizeLinear", [f"{name}/beta_q", f"{name}/beta_scale", f"{name}/beta_zero"],
                                 [f"{name}/beta"], name=f"{name}/beta"),
                helper.make_node("Add", [f"{name}/alpha_x", f"{name}/beta"], list(node.output), name=name)]):
            graph.node.insert(i + j, new)
        read_by[dq.output[0]].remove(node)
        if not read_by[dq.output[0]] and dq.output[0] not in outputs:
            graph.node.remove(dq)
        done += 1
    return done


def _failed(exc: Exception) -> NascoreError:
    first = first_line(exc) or type(exc).__name__
    return NascoreError(f"int8 quantization with ONNX Runtime failed: {type(exc).__name__}: {first}")


def node_groups(path: Path) -> dict[str, list[str]]:
    """The nodes of the ONNX file ``path`` that the QDQ quantizer would quantize, in groups a recipe keeps in float32
    together: by kind (convolutions as ``Conv depthwise``, ``Conv 1x1`` or ``Conv kxk``, every other node by its op
    type; the kinds with most nodes first), then by block (``block <module path>``, in graph order: the node
    names' path, as PyTorch's exporter names nodes, to the depth of the outermost numbered modules, e.g.
    ``blocks.5``; the modules beside those, such as a stem or a head, are blocks too). An unnamed node cannot be
    excluded and is left out (:func:`prepare` names them)."""
    import onnx
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    model = onnx.load(str(path), load_external_data=False)
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    kinds: dict[str, list[str]] = {}
    paths: list[tuple[str, list[str]]] = []
    for node in model.graph.node:
        if not node.name or (node.op_type not in QDQRegistry and node.op_type not in QLinearOpsRegistry):
            continue
        kind = node.op_type
        dims = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if dims is not None and len(dims) == 4:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            kind = ("Conv depthwise" if group > 1 and dims[1] == 1 else "Conv 1x1" if dims[2:] == [1, 1]
                    else "Conv kxk")
        kinds.setdefault(kind, []).append(node.name)
        paths.append((node.name, node.name.split("/")))

    depth = min((i for _, parts in paths for i, part in enumerate(parts) if re.fullmatch(r"\w+\.\d+", part)),
                default=None)
    blocks: dict[str, list[str]] = {}
    for name, parts in paths:
        if depth is not None and len(parts) > depth + 1:  # a module at that depth holds the node
            blocks.setdefault("block " + "/".join(parts[:depth + 1]).lstrip("/"), []).append(name)
    return {**dict(sorted(kinds.items(), key=lambda item: -len(item[1]))), **blocks}


@dataclass
class Recipe:
    """What :func:`choose_recipe` measured: the groups kept in float32, and each recipe tried with its latency (in
    the unit the search measures, e.g. relative to float32)."""

    kept_float: list[str]
    latency: float
    tried: list[tuple[list[str], float]] = field(default_factory=list)


def choose_recipe(kinds: list[str], blocks: list[str], latency: Callable[[list[str]], float],
                  margin: float = MARGIN, patience: int = PATIENCE) -> Recipe:
    """Which groups of nodes to keep in float32, by the latency each recipe measures (``latency(kept)``), starting
    from everything quantized (``latency([])``): greedy over ``kinds``, each kept as well when that is faster than
    the best so far by more than ``margin``; then the leading ``blocks`` together (the first one, two, ... blocks,
    until ``patience`` more in a row bring no new best; the best of them taken if it beats the best so far by the
    margin): int8 pays least in the first, high-resolution blocks, and one of them kept alone adds a conversion at
    each end where a run of them adds one; then each later block alone, greedy as the kinds. Last, each unit kept
    (a kind, the leading run, a later block), the last kept first, is timed again with and without it and dropped
    unless it still pays by the margin: of many noisy trials, some beat the margin by luck."""
    best = Recipe([], latency([]))
    best.tried.append(([], best.latency))
    units: list[list[str]] = []

    def trial(kept: list[str]) -> float:
        ms = latency(kept)
        best.tried.append((kept, ms))
        return ms

    def greedy(groups: list[str]) -> None:
        for group in groups:
            kept = [*best.kept_float, group]
            if (ms := trial(kept)) < best.latency * (1 - margin):
                best.kept_float, best.latency = kept, ms
                units.append([group])

    greedy(kinds)
    lead, lead_ms, since = 0, float("inf"), 0
    for k in range(1, len(blocks) + 1):
        if (ms := trial([*best.kept_float, *blocks[:k]])) < lead_ms:
            lead, lead_ms, since = k, ms, 0
        elif (since := since + 1) >= patience:
            break
    if lead and lead_ms < best.latency * (1 - margin):
        best.kept_float, best.latency = [*best.kept_float, *blocks[:lead]], lead_ms
        units.append(blocks[:lead])
    else:
        lead = 0
    greedy(blocks[lead + 1:])  # the next block kept as well was the leading run one longer, tried above
    for unit in reversed(units):
        without = [group for group in best.kept_float if group not in unit]
        kept_ms, without_ms = trial(best.kept_float), trial(without)
        if kept_ms < without_ms * (1 - margin):
            best.latency = kept_ms
        else:
            best.kept_float, best.latency = without, without_ms
    return best


@dataclass
class Quantized:
    """What :func:`best_int8` wrote and measured."""

    recipe: Recipe
    #: node count of each group kept in float32
    kept_float: dict[str, int]
    #: (float32, int8) median ms, ONNX Runtime, one thread, timed in turn
    latency_ms: tuple[float, float]
    #: ms of every node quantized (None: no recipe was searched)
    all_int8_ms: float | None


def best_int8(fp32: Path, out: Path, images: list[Tensor], shape: tuple[int, ...], measure: bool = True
              ) -> Quantized:
    """Quantize the ONNX file ``fp32`` into ``out``, calibrated on ``images``: with ``measure``, keeping in float32
    the groups of nodes the recipe search finds faster so on this machine at input ``shape``; else every node."""
    backend = OnnxRuntimeBackend(threads=1)

    def time(session: Any, seconds: float = MIN_RUN_TIME) -> float:
        return backend.time_session(session, shape, seconds).median_ms

    def interleaved(*paths: Path) -> list[float]:  # rounds of each in turn: drift on a busy machine hits all alike
        sessions = [backend.load(str(p)) for p in paths]
        rounds = [[time(session) for session in sessions] for _ in range(ROUNDS)]
        return [statistics.median(r[i] for r in rounds) for i in range(len(paths))]

    with tempfile.TemporaryDirectory(prefix="nascore-int8-") as scratch:
        prepared, trial = Path(scratch) / "prepared.onnx", Path(scratch) / "trial.onnx"
        prepare(fp32, prepared)
        groups = node_groups(prepared)
        float32 = backend.load(str(fp32))

        def nodes(kept: list[str]) -> list[str]:
            return sorted({n for group in kept for n in groups[group]})

        def latency(kept: list[str]) -> float:
            """The recipe's latency over float32's, timed in turn (a busy machine's drift cancels); the graph
            decides the speed, so one calibration batch will do."""
            quantize(prepared, trial, images[:1], nodes(kept))
            session = backend.load(str(trial))
            return statistics.median(time(session, TRIAL_TIME) / time(float32, TRIAL_TIME) for _ in range(ROUNDS))

        kinds = [group for group in groups if not group.startswith("block ")]
        blocks = [group for group in groups if group.startswith("block ")]
        recipe = choose_recipe(kinds, blocks, latency) if measure else Recipe([], float("nan"))
        quantize(prepared, out, images, nodes(recipe.kept_float))
        if recipe.kept_float:  # the chosen recipe against all-int8 again, at the final timing
            quantize(prepared, trial, images)
            every, chosen = interleaved(trial, out)
            if every <= chosen:
                shutil.copyfile(trial, out)
                recipe.kept_float = []
        latency_ms = tuple(interleaved(fp32, out))
    # all-int8's latency: the written file's unless the search kept groups in float32
    all_int8 = None if not measure else every if recipe.kept_float else latency_ms[1]
    return Quantized(recipe, {group: len(groups[group]) for group in recipe.kept_float}, latency_ms, all_int8)


def int8(source: ExportSource, flat: Flat, fp32: Path, out: Path, k: int, measure: bool = True) -> Int8Result:
    """Quantize the checked float32 export ``fp32`` into ``out`` (:func:`best_int8`) and compare the two on the
    run's data."""
    import onnx  # onnx: only when exporting

    data = source.data
    assert data is not None, "export() refuses --int8 without the run's data"
    images = calibration_batches(data, k)
    shape = (1, source.in_channels, source.input_size, source.input_size)
    q = best_int8(fp32, out, images, shape, measure)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        template = source.model(x)
        float32, quantized = OnnxNetwork(fp32, template), OnnxNetwork(out, template)
        eager = torch.cat([t.flatten() for t in flat(x)])
        got = torch.cat([t.flatten() for _, t in flatten(quantized(x))])
    val = list(loader(data.parts.val_set, data.batch_size, data.parts.collate, shuffle=False))
    scores = [evaluate(net, val, data.tasks, torch.device("cpu")) for net in (source.model, float32, quantized)]
    result = Int8Result(sum(len(i) for i in images), {key: (scores[0][key], scores[1][key], scores[2][key])
                                                      for key in scores[0]},
                        q.latency_ms, (got - eager).abs().max().item(), q.kept_float, q.all_int8_ms)
    # the float32 file's nascore.* metadata (the quantizer may drop it), and what int8 did
    proto = onnx.load(str(out))
    present = {prop.key for prop in proto.metadata_props}
    for prop in onnx.load(str(fp32)).metadata_props:
        if prop.key not in present:
            proto.metadata_props.add(key=prop.key, value=prop.value)
    proto.metadata_props.add(key="nascore.int8", value=json.dumps({
        "quantizer": "onnxruntime quantize_static, QDQ, per-channel int8 weights, uint8 activations, min-max",
        "calibration_images": result.calibration_images,
        "kept_float": result.kept_float, "recipes_vs_float32": [[kept, r] for kept, r in q.recipe.tried],
        "val": {key: {"float32": f, "int8": i} for key, (_, f, i) in result.metrics.items()}}))
    onnx.save(proto, str(out))
    return result


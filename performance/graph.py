"""Computational graphs of any ``nn.Module`` (AIO-P's predictor input): ``torch.fx`` traces the model, a zero
input of the given size gives every tensor's shape, and each primitive operation becomes one node.

Nodes: one op from :data:`VOCAB` (anything else is :data:`OOV`, never an error). Operations that move or
describe data without computing (``getattr``, ``size``, ``view``/``reshape``/``flatten``/``permute``,
``getitem``, dropout, ``nn.Identity``, ``contiguous``, ...) are collapsed: their inputs connect to their users.
Shape arithmetic and constants (parameters read with ``get_attr``, ``torch.zeros``) carry no data flow. Only the
model's first argument is the ``input`` node (later ones, masks and flags, take their defaults). Modules timm marks
untraceable stay whole (one node; OOV unless their class is known, e.g. ``Conv2dSame`` is a conv); a whole
norm+activation module (timm's ``BatchNormAct2d``) gives a ``batch_norm`` node and one for its activation. A
convolution of another library (a subclass of torch's) is one node too, followed by nodes for the ``norm`` and
activation it holds (detectron2's ``Conv2d``, whose forward fx cannot trace). A module a space marks as a
``nascore.GraphOperation`` is the one node it names.
Modules named ``*ChannelShuffle*`` are ``channel_shuffle`` however they are written. The model is traced and run in
eval mode and left in the mode it was in.

Node features (:data:`FEATURE_WIDTH` columns), in this order:

- one-hot op: ``len(VOCAB) + 1`` columns (the last is :data:`OOV`);
- input H, W, C and output H, W, C: H and W divided by :data:`SIZE_SCALE` (256), channels by
  :data:`CHANNEL_SCALE` (512), as in AIO-P's reference code. A tensor ``[N, C, H, W]`` gives C, H, W;
  ``[N, C]`` gives C, 1, 1; ``[N, L, C]`` (tokens) gives C, L, 1;
- kernel H, kernel W divided by :data:`KERNEL_SCALE` (8); stride H, stride W divided by :data:`STRIDE_SCALE`
  (4) (convolutions and pools; 0 elsewhere);
- ``log2(groups) / GROUPS_LOG_SCALE`` (10; convolutions, 0 elsewhere);
- bias flag (1 for a convolution or linear layer with a bias).

The graph is a ``torch_geometric.data.Data`` with ``x`` (nodes x features), ``edge_index`` (2 x edges,
source -> user, in data-flow order) and ``ops`` (the op name of each node).
"""
from __future__ import annotations

import difflib
import math
import operator
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from nascore.arch import arch_space, resolve_arch
from nascore.errors import NascoreError, first_line
from nascore.fileio import save_checkpoint
from nascore.protocols import GraphOperation, MultiTaskBackbone
from nascore.registry import get_registry
from nascore.task import build_network

VOCAB: tuple[str, ...] = (
    "input", "output",
    "conv", "depthwise_conv", "grouped_conv", "conv_transpose", "linear", "matmul",
    "batch_norm", "layer_norm", "group_norm",
    "relu", "relu6", "leaky_relu", "hardswish", "hardsigmoid", "sigmoid", "tanh", "silu", "gelu", "softmax",
    "add", "mul", "concat", "channel_shuffle", "pad",
    "max_pool", "avg_pool", "global_pool", "upsample", "identity", "attention",
)
OOV = "oov"
OPS: tuple[str, ...] = VOCAB + (OOV,)
SIZE_SCALE = 256.0
CHANNEL_SCALE = 512.0
KERNEL_SCALE = 8.0
STRIDE_SCALE = 4.0
GROUPS_LOG_SCALE = 10.0
NUMERIC_FEATURES = ("h_in", "w_in", "c_in", "h_out", "w_out", "c_out", "kernel_h", "kernel_w", "stride_h",
                    "stride_w", "log_groups", "bias")
FEATURE_WIDTH = len(OPS) + len(NUMERIC_FEATURES)
_INDEX = {op: i for i, op in enumerate(OPS)}

# -- what each fx target is -------------------------------------------------------------------------------
_MODULES: tuple[tuple[type, str], ...] = (  # checked in order: subclasses first (ReLU6 is a Hardtanh)
    (nn.ReLU6, "relu6"), (nn.ReLU, "relu"), (nn.LeakyReLU, "leaky_relu"), (nn.Hardswish, "hardswish"),
    (nn.Hardsigmoid, "hardsigmoid"), (nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh"), (nn.SiLU, "silu"),
    (nn.GELU, "gelu"), (nn.Softmax, "softmax"),
    (nn.Linear, "linear"), (nn.modules.batchnorm._BatchNorm, "batch_norm"), (nn.LayerNorm, "layer_norm"),
    (nn.GroupNorm, "group_norm"), (nn.ChannelShuffle, "channel_shuffle"),
    (nn.Upsample, "upsample"), (nn.modules.padding._ConstantPadNd, "pad"), (nn.ZeroPad2d, "pad"),
    (nn.modules.pooling._MaxPoolNd, "max_pool"), (nn.modules.pooling._AvgPoolNd, "avg_pool"),
)
_COLLAPSED_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                      nn.Flatten, nn.Unflatten)

_FUNCTIONS: dict[Any, str] = {
    operator.add: "add", operator.iadd: "add", torch.add: "add",
    operator.mul: "mul", operator.imul: "mul", torch.mul: "mul",
    torch.cat: "concat", torch.concat: "concat", torch.stack: "concat",
    F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.leaky_relu: "leaky_relu", F.hardswish: "hardswish",
    F.hardsigmoid: "hardsigmoid", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh",
    F.tanh: "tanh", F.silu: "silu", F.gelu: "gelu", F.softmax: "softmax", torch.softmax: "softmax",
    F.linear: "linear", torch.matmul: "matmul", operator.matmul: "matmul", torch.bmm: "matmul",
    F.batch_norm: "batch_norm", F.layer_norm: "layer_norm", F.group_norm: "group_norm",
    F.channel_shuffle: "channel_shuffle", torch.channel_shuffle: "channel_shuffle", F.pad: "pad",
    F.max_pool1d: "max_pool", F.max_pool2d: "max_pool", F.max_pool3d: "max_pool",
    F.avg_pool1d: "avg_pool", F.avg_pool2d: "avg_pool", F.avg_pool3d: "avg_pool",
    F.interpolate: "upsample", F.upsample: "upsample", F.upsample_bilinear: "upsample",
    F.upsample_nearest: "upsample", torch.mean: "global_pool", F.scaled_dot_product_attention: "attention",
}
_METHODS: dict[str, str] = {
    "add": "add", "mul": "mul", "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax",
    "matmul": "matmul", "mean": "global_pool", "__add__": "add", "__mul__": "mul", "__radd__": "add",
    "__rmul__": "mul",
}
# data moved or described, not computed: collapsed into an edge
_COLLAPSED_FUNCTIONS = {
    getattr, operator.getitem, torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze,
    torch.unsqueeze, torch.chunk, torch.split, torch.narrow, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    torch.t, torch.movedim, torch.unbind, torch.roll,
}
#: timm's untraceable functions that only rearrange data (kept whole by the tracer), by name
_COLLAPSED_NAMES = {"window_reverse", "window_reverse_nchw", "grid_reverse", "grid_reverse_nchw", "deblockify",
                    "reshape_pre_pool", "reshape_post_pool"}
_COLLAPSED_METHODS = {
    "size", "dim", "view", "view_as", "reshape", "reshape_as", "flatten", "permute", "transpose", "contiguous",
    "squeeze", "unsqueeze", "expand", "expand_as", "chunk", "split", "narrow", "t", "to", "type", "float", "half",
    "double", "clone", "detach", "unbind", "movedim", "repeat", "unflatten",
}
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_FUNCTIONS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if v else (0, 0)
    return (int(v), int(v)) if isinstance(v, int) else (0, 0)


def _chw(meta: Any) -> tuple[int, int, int] | None:
    """(C, H, W) of the first tensor in a (nested) shape-prop result; None when there is none."""
    if isinstance(meta, (tuple, list)) and not hasattr(meta, "shape"):  # TensorMetadata is a NamedTuple
        for m in meta:
            found = _chw(m)
            if found is not None:
                return found
        return None
    if isinstance(meta, dict):
        return _chw(list(meta.values()))
    shape = getattr(meta, "shape", None)
    if shape is None:
        return None
    s = [int(d) for d in shape]
    if len(s) >= 4:
        return s[1], s[-2] if len(s) == 4 else math.prod(s[2:-1]), s[-1]
    if len(s) == 3:
        return s[2], s[1], 1
    if len(s) == 2:
        return s[1], 1, 1
    return (s[0] if s else 1), 1, 1


class _Tracer(fx.Tracer):
    """fx's tracer with timm's untraceable modules and functions kept whole, recording which module a failure
    happened in."""

    def __init__(self, leaf_types: tuple[type, ...] = ()):
        try:
            # timm: commands that do not need it never load it (tests/test_startup.py)
            from timm.models._features_fx import get_notrace_functions, get_notrace_modules
            notrace_functions, notrace_modules = tuple(get_notrace_functions()), tuple(get_notrace_modules())
        except ImportError:  # pragma: no cover - timm is a dependency
            notrace_functions, notrace_modules = (), ()
        super().__init__(autowrap_functions=notrace_functions)
        self.leaf_types = tuple(leaf_types) + notrace_modules
        self.failed_in: tuple[str, str] | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # convolutions of other libraries (detectron2's Conv2d checks numel(), which fx cannot) are one node
        if isinstance(m, self.leaf_types + _CONV + (GraphOperation,)) or "ChannelShuffle" in type(m).__name__:
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m: nn.Module, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost module: the first to see the error
                self.failed_in = (self.path_of_module(m), type(m).__name__)
            raise


def trace(model: nn.Module, leaf_types: tuple[type, ...] = ()) -> fx.GraphModule:
    """``model`` as an fx graph (in eval mode); NascoreError naming the module that stopped the tracer."""
    tracer = _Tracer(leaf_types)
    was_training = model.training
    model.eval()
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        where = (f"module '{tracer.failed_in[0]}' ({tracer.failed_in[1]})" if tracer.failed_in and tracer.failed_in[0]
                 else f"the forward of {type(model).__name__} itself")
        reason = first_line(exc) or type(exc).__name__
        raise NascoreError(f"cannot trace {type(model).__name__} with torch.fx: {where} stopped the tracer "
                           f"({type(exc).__name__}: {reason}); it may branch on tensor values") from exc
    finally:
        model.train(was_training)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _module_op(m: nn.Module, out_chw: tuple[int, int, int] | None) -> tuple[str, dict[str, Any]]:
    if isinstance(m, GraphOperation):
        op, attrs = m.graph_node()
        return (op if op in _INDEX else OOV), dict(attrs)
    if isinstance(m, _CONV):
        groups, cin = m.groups, m.in_channels
        op = "conv" if groups == 1 else "depthwise_conv" if groups == cin else "grouped_conv"
        return op, {"kernel": _pair(m.kernel_size), "stride": _pair(m.stride), "groups": groups,
                    "bias": m.bias is not None}
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        return "conv_transpose", {"kernel": _pair(m.kernel_size), "stride": _pair(m.stride), "groups": m.groups,
                                  "bias": m.bias is not None}
    if isinstance(m, (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
        if out_chw is not None and out_chw[1:] == (1, 1):
            return "global_pool", {}
        return ("avg_pool" if isinstance(m, nn.modules.pooling._AdaptiveAvgPoolNd) else "max_pool"), {}
    if "ChannelShuffle" in type(m).__name__:  # a module of that name written with view/transpose (FBNet's)
        return "channel_shuffle", {}
    for cls, op in _MODULES:
        if isinstance(m, cls):
            extra: dict[str, Any] = {}
            if op in ("max_pool", "avg_pool"):
                extra = {"kernel": _pair(m.kernel_size), "stride": _pair(m.stride or m.kernel_size)}
            elif op == "linear":
                extra = {"bias": m.bias is not None}
            return op, extra
    return OOV, {}


def _fused_parts(m: nn.Module) -> list[str]:
    """The ops a leaf module runs after its own: its ``norm`` (detectron2's Conv2d) and its ``act``/``activation``
    (a module, or a function such as ``F.relu``)."""
    parts = []
    for attr in ("norm", "act", "activation"):
        sub = getattr(m, attr, None)
        if isinstance(sub, nn.Module) and not isinstance(sub, _COLLAPSED_MODULES):
            parts.append(_module_op(sub, None)[0])
        elif callable(sub) and not isinstance(sub, nn.Module) and sub in _FUNCTIONS:
            parts.append(_FUNCTIONS[sub])
    return parts


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if name in node.kwargs:
        return node.kwargs[name]
    return node.args[index] if len(node.args) > index else default


def _meta_shape(a: Any) -> list[int] | None:
    if isinstance(a, fx.Node):
        meta = a.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape"):
            return [int(d) for d in meta.shape]
    return None


def _function_op(node: fx.Node) -> tuple[str | None, dict[str, Any]]:
    """(op, attributes) of a call_function/call_method node; op None: collapsed."""
    target = node.target
    if node.op == "call_method":
        name = str(target)
        base = name[:-1] if name.endswith("_") and not name.endswith("__") else name
        if base in _COLLAPSED_METHODS:
            return None, {}
        return _METHODS.get(base, OOV), {}
    if target in _COLLAPSED_FUNCTIONS or getattr(target, "__name__", None) in _COLLAPSED_NAMES:
        return None, {}
    if target in _CONV_FUNCTIONS:
        weight = _meta_shape(_arg(node, 1, "weight"))
        groups = int(_arg(node, 6, "groups", 1) or 1)
        cin = _meta_shape(node.args[0])
        cin_c = cin[1] if cin and len(cin) > 1 else 0
        op = "conv" if groups == 1 else "depthwise_conv" if groups == cin_c else "grouped_conv"
        kernel = _pair(weight[2:]) if weight and len(weight) > 2 else (0, 0)
        return op, {"kernel": kernel, "stride": _pair(_arg(node, 3, "stride", 1)), "groups": groups,
                    "bias": _arg(node, 2, "bias") is not None}
    if target in (F.max_pool2d, F.avg_pool2d, F.max_pool1d, F.avg_pool1d, F.max_pool3d, F.avg_pool3d):
        kernel = _arg(node, 1, "kernel_size", 0)
        stride = _arg(node, 2, "stride", None) or kernel
        return _FUNCTIONS[target], {"kernel": _pair(kernel), "stride": _pair(stride)}
    if target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.adaptive_avg_pool1d, F.adaptive_max_pool1d):
        out = _chw(node.meta.get("tensor_meta"))
        if out is not None and out[1:] == (1, 1):
            return "global_pool", {}
        return ("avg_pool" if "avg" in target.__name__ else "max_pool"), {}
    if target is F.linear:
        return "linear", {"bias": _arg(node, 2, "bias") is not None}
    try:
        return _FUNCTIONS.get(target, OOV), {}
    except TypeError:  # an unhashable target
        return OOV, {}


def _features(op: str, chw_in, chw_out, attrs: dict[str, Any]) -> list[float]:
    row = [0.0] * FEATURE_WIDTH
    row[_INDEX[op]] = 1.0
    c_in, h_in, w_in = chw_in or (0, 0, 0)
    c_out, h_out, w_out = chw_out or (0, 0, 0)
    kh, kw = attrs.get("kernel", (0, 0))
    sh, sw = attrs.get("stride", (0, 0))
    groups = attrs.get("groups", 0)
    row[len(OPS):] = [h_in / SIZE_SCALE, w_in / SIZE_SCALE, c_in / CHANNEL_SCALE,
                      h_out / SIZE_SCALE, w_out / SIZE_SCALE, c_out / CHANNEL_SCALE,
                      kh / KERNEL_SCALE, kw / KERNEL_SCALE, sh / STRIDE_SCALE, sw / STRIDE_SCALE,
                      math.log2(groups) / GROUPS_LOG_SCALE if groups else 0.0, float(bool(attrs.get("bias")))]
    return row


def _inputs(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return found


def build_graph(model: nn.Module, input_size: int | tuple[int, int] = 224, in_channels: int = 3,
                leaf_types: tuple[type, ...] = ()):
    """The computational graph of ``model`` at ``input_size`` as ``torch_geometric.data.Data``
    (``x``, ``edge_index``, ``ops``). ``leaf_types``: module classes kept as one node (OOV unless known)."""
    from torch.fx.passes.shape_prop import ShapeProp  # torch.fx's passes: only when a graph is traced

    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    gm = trace(model, leaf_types)
    try:
        p = next(model.parameters())
        device, dtype = p.device, p.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    was_training = model.training
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, in_channels, h, w, device=device, dtype=dtype))
    except Exception as exc:
        raise NascoreError(f"{type(model).__name__} fails on a {in_channels}x{h}x{w} input: "
                           f"{first_line(exc) or type(exc).__name__}"
                           ) from exc
    finally:
        model.train(was_training)

    modules = dict(gm.named_modules())
    ops: list[str] = []
    rows: list[list[float]] = []
    edges: list[tuple[int, int]] = []
    sources: dict[fx.Node, frozenset[int]] = {}  # fx node -> graph nodes its value comes from

    def add_node(op: str, node: fx.Node, data_in: list[fx.Node], attrs: dict[str, Any]) -> int:
        chw_in = next((c for c in (_chw(a.meta.get("tensor_meta")) for a in data_in) if c is not None), None)
        return add_row(op, chw_in, _chw(node.meta.get("tensor_meta")), attrs,
                       sorted(set().union(*(sources.get(a, ()) for a in data_in))))

    def add_row(op: str, chw_in, chw_out, attrs: dict[str, Any], inputs: list[int]) -> int:
        index = len(ops)
        ops.append(op)
        rows.append(_features(op, chw_in, chw_out, attrs))
        edges.extend((s, index) for s in inputs)
        return index

    for node in gm.graph.nodes:
        data_in = [a for a in _inputs(node) if sources.get(a)]
        if node.op == "placeholder":  # the image; later arguments (masks, flags) take their defaults
            sources[node] = frozenset([add_node("input", node, [], {})]) if not ops else frozenset()
            continue
        if node.op == "get_attr":
            sources[node] = frozenset()  # a parameter or buffer: no data flow
            continue
        if node.op == "output":
            add_node("output", node, data_in, {})
            continue
        if "tensor_meta" not in node.meta or not data_in:  # shape arithmetic or a constant
            sources[node] = frozenset()
            continue
        if node.op == "call_module":
            module = modules[str(node.target)]
            if isinstance(module, _COLLAPSED_MODULES):
                op = None
            else:
                op, attrs = _module_op(module, _chw(node.meta.get("tensor_meta")))
        else:
            op, attrs = _function_op(node)
        if op is None:
            sources[node] = frozenset().union(*(sources[a] for a in data_in))
            continue
        index = add_node(op, node, data_in, attrs)
        if node.op == "call_module":  # a fused leaf (timm's BatchNormAct2d, detectron2's Conv2d): its norm and
            chw = _chw(node.meta.get("tensor_meta"))  # activation are nodes too
            for part in _fused_parts(module):
                index = add_row(part, chw, chw, {}, [index])
        sources[node] = frozenset([index])

    edge_index = torch.tensor(edges, dtype=torch.long).t().reshape(2, -1)
    x = torch.tensor(rows, dtype=torch.float32).reshape(-1, FEATURE_WIDTH)
    return _data_class()(x=x, edge_index=edge_index, ops=ops, num_nodes=len(ops))


def histogram(graph) -> Counter:
    """Op name -> node count."""
    return Counter(graph.ops)


def graph_to_dict(graph) -> dict[str, Any]:
    """Plain tensors and lists (loads with ``torch.load(weights_only=True)``)."""
    return {"format": "nascore-graph", "version": 1, "x": graph.x, "edge_index": graph.edge_index,
            "ops": list(graph.ops), "vocab": list(OPS), "numeric_features": list(NUMERIC_FEATURES)}


def save_graph(graph, path: str | Path) -> None:
    """Write ``graph`` to ``path`` as :func:`graph_to_dict` (``torch.save``, atomically)."""
    save_checkpoint(graph_to_dict(graph), path)


def _data_class() -> type:
    """``torch_geometric.data.Data``, imported where a graph is made (torch_geometric costs seconds to import)."""
    with warnings.catch_warnings():  # torch_geometric's import warns about torch.jit.script, which it uses
        warnings.simplefilter("ignore", FutureWarning)
        from torch_geometric.data import Data  # torch_geometric costs seconds to import: only where a graph is made
    return Data


def graph_record(graph) -> dict[str, Any]:
    """A JSON-able graph that outlives a vocabulary change: op names, numeric features (``NUMERIC_FEATURES``,
    rounded to 6 digits) and edges; :func:`graph_from_record` rebuilds the one-hot columns."""
    numeric = graph.x[:, len(OPS):].tolist()
    return {"ops": list(graph.ops), "features": [[round(v, 6) for v in row] for row in numeric],
            "edges": graph.edge_index.tolist()}


def graph_from_record(record: dict[str, Any]):
    """The ``torch_geometric.data.Data`` of a :func:`graph_record` (ops the vocabulary lacks become OOV)."""
    ops = [op if op in _INDEX else OOV for op in record["ops"]]
    onehot = torch.zeros(len(ops), len(OPS))
    onehot[torch.arange(len(ops)), torch.tensor([_INDEX[op] for op in ops], dtype=torch.long)] = 1.0
    numeric = torch.tensor(record["features"], dtype=torch.float32).reshape(len(ops), len(NUMERIC_FEATURES))
    edges = torch.tensor(record["edges"], dtype=torch.long).reshape(2, -1)
    return _data_class()(x=torch.cat([onehot, numeric], dim=1), edge_index=edges, ops=ops, num_nodes=len(ops))


TIMM_PREFIX = "timm:"


def resolve_model(ref: str, input_size: int | None = None, registry=None) -> tuple[nn.Module, int, str]:
    """(model, input size, what it is) for ``ref``: ``timm:<model>`` (created with pretrained=False and its default
    classes), an arch file or a named arch (its backbone with a 1000-class classification head, as ``nascore
    info`` counts it; a branched multi-task backbone without heads). ``input_size`` None: the model's own."""
    if ref.startswith(TIMM_PREFIX):
        import timm  # timm: commands that do not need it never load it (tests/test_startup.py)

        name = ref[len(TIMM_PREFIX):]
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
            raise NascoreError(f"unknown timm model '{name}' (timm.list_models() lists them)"
                               + (f"; did you mean {', '.join(close)}?" if close else ""))
        model = timm.create_model(name, pretrained=False)
        size = input_size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        return model, size, f"timm model {name}"

    registry = registry or get_registry()
    arch = resolve_arch(ref, registry)
    space = arch_space(arch, ref, registry, input_size=input_size)
    size = input_size or space.input_size
    backbone = space.build(arch)
    if isinstance(backbone, MultiTaskBackbone):
        return backbone, size, f"{arch.name or ref} ({arch.space}, branched backbone for tasks " \
                               f"{', '.join(backbone.tasks)}, without heads)"
    classification = registry.get("task", "classification")({"num_classes": 1000})
    return (build_network(backbone, [classification], None), size,
            f"{arch.name or ref} ({arch.space}, with a 1000-class classification head)")

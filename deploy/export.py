"""``nascore export``: a trained run's network, or an arch with random weights, written as ONNX, a ``torch.export``
program or TorchScript, then run from the written file and compared with eager PyTorch.

The file is written to a temp file beside ``--out``, loaded back and checked, and only then renamed, so a failed
export or check leaves nothing. Outputs are flattened to named tensors: a task's output by its name
(``classification``), feature levels by index (``features.0``), a branched backbone's per task (``a.0``).
Metadata (arch as JSON, input size, normalisation, output names) goes into ONNX ``metadata_props`` under
``nascore.*`` keys, or into the ``nascore.json`` extra file of an exported program or TorchScript archive.
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from nascore.arch import Arch, arch_space, is_arch_file, resolve_arch
from nascore.costs.timing import OnnxRuntimeBackend
from nascore.errors import NascoreError, first_line
from nascore.fileio import GiB, MiB, atomic_path, check_user_file, human_size, load_checkpoint, parse_user_json
from nascore.hookspecs import ExportResult
from nascore.protocols import MultiTaskBackbone
from nascore.registry import get_registry
from nascore.rundir import SPEC_FILE
from nascore.spec import load_spec
from nascore.spec_model import TrainConfig
from nascore.strategy import owner_tasks
from nascore.task import build_network

from .network import Data, ExportSource, Flat
from .quantize import int8

if TYPE_CHECKING:
    pass

FORMATS = ("onnx", "exported-program", "torchscript")
#: ONNX opset: HardSwish needs 14; 17 is supported by every ONNX Runtime of the last years and by the exporter
OPSET = 17
#: largest allowed max|file - eager| / max(1, max|eager|) in float32
TOLERANCE = 1e-4
META_FILE = "nascore.json"
#: the largest ``nascore.json`` read from an exported archive, and the largest ONNX file (protobuf's own limit: a
#: larger graph keeps its weights in external data, which nascore export does not write)
META_MAX_BYTES, ONNX_MAX_BYTES = MiB, 2 * GiB
MODEL_FILE = "train_model.pt"


# -- sources ---------------------------------------------------------------------------------------------------
def plugin_exporter(ref: str) -> Callable[..., ExportResult] | None:
    """A plugin's exporter for ``ref`` (hook ``nascore_exporter``, e.g. nascore-detectron2 for runs of its
    ``detectron2`` task), or None: nascore exports it itself."""

    return get_registry().hook.nascore_exporter(source=ref)


def load_source(ref: str, input_size: int | None = None) -> ExportSource:
    """A run directory, a ``train_model.pt`` (its spec.yaml beside it), an arch file or a named arch."""
    path = Path(ref)
    if path.is_dir():
        model_file = path / MODEL_FILE
        if not model_file.is_file():
            others = sorted(p.name for p in path.glob("train*_model.pt"))
            hint = f"; it has {', '.join(others)}: pass one of them" if others else \
                " (train one with `nascore train` or a spec with a train: block)"
            raise NascoreError(f"run directory {path} has no trained model {model_file}{hint}")
        return _trained(model_file, input_size)
    if path.suffix == ".pt" or (path.is_file() and _starts_with_zip(path)):
        return _trained(path, input_size)
    return _untrained(ref, input_size)


def _starts_with_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _trained(model_file: Path, input_size: int | None) -> ExportSource:

    ckpt = load_checkpoint(model_file, what="trained model")
    if not isinstance(ckpt.get("arch"), dict) or not isinstance(ckpt.get("network"), dict):
        raise NascoreError(f"trained model {model_file} lacks 'arch' and 'network' entries; expected a "
                           f"{MODEL_FILE} that `nascore train` writes")
    try:
        arch = Arch.model_validate(ckpt["arch"])
    except ValueError as exc:
        raise NascoreError(f"trained model {model_file} holds an arch that is not valid: {exc}") from None
    spec_path = model_file.parent / SPEC_FILE
    if not spec_path.is_file():
        raise NascoreError(f"trained model {model_file} has no {SPEC_FILE} beside it (the run's spec, which gives "
                           "its tasks and dataset)")
    spec = load_spec(spec_path)
    info = spec.dataset.create().info()  # the data itself is read (generated) only for --int8: Data.parts
    size = input_size or info.image_size
    space = arch_space(arch, str(model_file), input_size=size)
    tasks = owner_tasks([t.create() for t in spec.tasks], arch.task)
    misfit = _misfit(lambda: build_network(space.build(arch), tasks, info), ckpt["network"])
    if misfit is None:
        network = build_network(space.build(arch), tasks, info)  # exported and checked on the CPU
        try:
            network.load_state_dict(ckpt["network"])
        except RuntimeError as exc:
            misfit = first_line(exc)
    if misfit is not None:
        raise NascoreError(f"trained model {model_file} does not fit its arch and the tasks of {spec_path}: "
                           f"{misfit}")
    heads = ", ".join(t.name for t in tasks)
    data = Data(spec, tasks, (spec.train or TrainConfig()).batch_size)
    return ExportSource(network.eval(), arch, size, info.in_channels, True,
                        f"{model_file} (trained weights, heads: {heads})", info.mean, info.std, data)


def _misfit(make: Callable[[], nn.Module], weights: dict) -> str | None:
    """What keeps ``weights`` from loading into the network ``make`` builds, found on the meta device: the network's
    sizes (which a run's spec and arch declare) are checked against the weights before anything is allocated. A
    network that cannot be built on the meta device (a plugin's head that computes with real tensors) is checked
    as it is loaded."""
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in make().state_dict().items()}
    except Exception:  # noqa: BLE001 - see above: the real build and load say what is wrong
        return None
    found = {k: tuple(v.shape) for k, v in weights.items() if isinstance(v, Tensor)}
    problems = [f"size mismatch for {k}: {list(found[k])} in the file, {list(shape)} in the network"
                for k, shape in expected.items() if k in found and found[k] != shape]
    missing, unexpected = [k for k in expected if k not in weights], [k for k in weights if k not in expected]
    problems += [f"missing {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}"] if missing else []
    problems += [f"unexpected {', '.join(map(str, unexpected[:3]))}{', ...' if len(unexpected) > 3 else ''}"] \
        if unexpected else []
    return "; ".join(problems[:3]) or None


def _untrained(ref: str, input_size: int | None) -> ExportSource:
    """An arch with random weights and the heads ``nascore info`` counts: a 1000-class classifier, or none for a
    branched (per-task) backbone, whose per-task feature levels are the outputs."""

    registry = get_registry()
    arch = resolve_arch(ref, registry)
    space = arch_space(arch, ref, registry, input_size=input_size)
    torch.manual_seed(0)
    backbone = space.build(arch)
    if isinstance(backbone, MultiTaskBackbone):
        model, heads = backbone, "none (a branched backbone: per-task feature levels)"
    else:
        classification = registry.get("task", "classification")({"num_classes": 1000})
        model, heads = build_network(backbone, [classification], None), "classification 1000"
    what = f"arch file {ref}" if is_arch_file(ref) else f"arch '{ref}'"
    return ExportSource(model.eval(), arch, input_size or space.input_size, 3, False,
                  f"{what} (random weights, not trained; heads: {heads})")


# -- exporting -------------------------------------------------------------------------------------------------
@contextmanager
def _module_trail(model: nn.Module) -> Iterator[list[str]]:
    """The names of the modules being called, innermost last (what was running when an exporter failed)."""
    trail: list[str] = []
    handles = []
    for name, module in model.named_modules():
        label = f"{name or '<root>'} ({type(module).__name__})"
        handles.append(module.register_forward_pre_hook(lambda m, a, label=label: trail.append(label) and None))
        handles.append(module.register_forward_hook(lambda m, a, o: (trail.pop() if trail else None) and None))
    try:
        yield trail
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _captured_fds(log: list[str]) -> Iterator[None]:
    """stdout and stderr (the file descriptors) into ``log``: on a failure the TorchScript-based ONNX exporter prints
    its whole graph there, whose op scopes say which module an unsupported op is in."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            log.append(sink.read().decode(errors="replace"))


def _op_module(message: str, log: str) -> str | None:
    """The module (dotted name and class) of the first node of the op a TorchScript-exporter error names
    ("operator 'aten::fft_fft'"), from the graph it printed: scopes are ``Class::name/Class::name/...``."""
    op = re.search(r"operator '([\w:.]+)'", message)
    line = next((ln for ln in log.splitlines() if op and f"= {op[1]}(" in ln and "scope: " in ln), None)
    if line is None:
        return None
    segments = [seg.split("::", 1) for seg in line.split("scope: ", 1)[1].split(" # ")[0].strip().split("/")]
    names: list[str] = []
    for _, name in segments[1:]:  # the first is the Flat wrapper
        if names and name.startswith(names[-1] + "."):  # a Sequential's child is scoped "dw/dw.0"
            names[-1] = name
        elif name:
            names.append(name)
    return f"{'.'.join(names) or '<root>'} ({segments[-1][0].rsplit('.', 1)[-1]})"


def _export_onnx(flat: Flat, x: Tensor, path: Path, dynamic: bool, meta: dict[str, str]) -> None:
    import onnx  # onnx: only when exporting

    # the TorchScript-based exporter (dynamo=False): it exports every space's archs (channel shuffle, hardswish,
    # SE, sliced widths, multi-path fbnetv5, branched trees) in well under a second and gives plain named
    # outputs; the dynamo exporter takes seconds per network and reports failures less directly
    axes = {n: {0: "batch"} for n in ["input", *flat.names]} if dynamic else None
    log: list[str] = []
    try:
        with warnings.catch_warnings(), _captured_fds(log):
            warnings.simplefilter("ignore")
            torch.onnx.export(flat, (x,), str(path), dynamo=False, opset_version=OPSET, input_names=["input"],
                              output_names=flat.names, dynamic_axes=axes)
    except Exception as exc:
        first = first_line(exc) or type(exc).__name__
        where = _op_module(first, log[0] if log else "")
        place = f" in module {where}" if where is not None else ""
        raise NascoreError(f"export to onnx failed{place}: {type(exc).__name__}: {first}") from None
    proto = onnx.load(str(path))
    for key, value in meta.items():
        proto.metadata_props.add(key=f"nascore.{key}", value=value)
    onnx.save(proto, str(path))


def _export_program(flat: Flat, x: Tensor, path: Path, dynamic: bool, meta: dict[str, str]) -> None:
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic else None
    # non-strict: the forward runs as Python (module hooks name a failing module), ops traced with fake tensors
    program = torch.export.export(flat, (x,), dynamic_shapes=shapes, strict=False)
    torch.export.save(program, str(path), extra_files={META_FILE: json.dumps(meta)})


def _export_torchscript(flat: Flat, x: Tensor, path: Path, dynamic: bool, meta: dict[str, str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(flat, (x,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={META_FILE: json.dumps(meta)})  # deprecated, still asked for


def _runner(fmt: str, path: Path) -> Callable[[Tensor], list[Tensor]]:
    """The written file loaded back, as a function of a batch."""
    if fmt == "onnx":

        session = OnnxRuntimeBackend(threads=0).load(str(path))  # 0: ONNX Runtime's default threads
        return lambda x: [torch.from_numpy(o) for o in session.run(None, {"input": x.numpy()})]
    module = load_module(fmt, path)
    return lambda x: list(module(x))


def load_module(fmt: str, path: Path) -> nn.Module:
    """An exported program's or TorchScript archive's module."""
    if fmt == "exported-program":
        return torch.export.load(str(path)).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path))


EXPORTERS = {"onnx": _export_onnx, "exported-program": _export_program, "torchscript": _export_torchscript}


def check(run: Callable[[Tensor], list[Tensor]], flat: Flat, x: Tensor) -> tuple[float, float]:
    """(largest absolute difference, that over max(1, largest eager magnitude)) between the file and eager."""
    with torch.no_grad():
        eager = flat(x)
        got = run(x)
    if len(got) != len(eager):
        raise NascoreError(f"the exported file returns {len(got)} outputs, eager PyTorch {len(eager)}")
    diff, scale = 0.0, 1.0
    for name, e, g in zip(flat.names, eager, got):
        if tuple(g.shape) != tuple(e.shape):
            raise NascoreError(f"output {name}: the exported file gives shape {tuple(g.shape)}, eager PyTorch "
                               f"{tuple(e.shape)}")
        diff = max(diff, (g.float() - e.float()).abs().max().item())
        scale = max(scale, e.abs().max().item())
    return diff, diff / scale


def export(source: ExportSource, fmt: str, out: str | Path, batch: int = 1, dynamic_batch: bool = False,
           int8_batches: int | None = None, int8_recipe: str = "measure") -> ExportResult:
    """Write ``source`` as ``fmt`` to ``out`` (atomically) after checking the file against eager PyTorch on a
    seeded batch (and on a second batch size with ``dynamic_batch``); returns what was checked. With
    ``int8_batches`` (ONNX, a trained source), the checked float32 file is quantized to int8 (``quantize``),
    calibrated on that many training batches, and the int8 file is written; it has a dynamic batch axis."""
    if fmt not in EXPORTERS:
        raise NascoreError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.is_dir():
        raise NascoreError(f"--out {out} is a directory; expected a file name")
    if int8_batches is not None:
        if fmt != "onnx":
            raise NascoreError(f"--int8 writes ONNX (ONNX Runtime's static quantization), not {fmt}: use "
                               "--format onnx")
        if int8_batches < 1:
            raise NascoreError(f"--calibration-batches must be at least 1, not {int8_batches}")
        if source.data is None:
            raise NascoreError("--int8 calibrates on the run's dataset and scores on its validation split: the "
                               "source must be a run directory or a train_model.pt, not an arch (random weights, "
                               "no dataset)")
        dynamic_batch = True  # calibration and validation run at the dataset's batch sizes
    shape = (batch, source.in_channels, source.input_size, source.input_size)
    # a dynamic batch axis is traced at a batch of at least 2: torch.export specialises a size of 1
    x = torch.randn((max(batch, 2) if dynamic_batch else batch, *shape[1:]), generator=torch.Generator().manual_seed(0))
    flat = Flat(source.model, x).eval()
    meta = {"arch": source.arch.model_dump_json(exclude_none=True), "input_size": str(source.input_size),
            "in_channels": str(source.in_channels), "mean": json.dumps(source.mean), "std": json.dumps(source.std),
            "outputs": json.dumps(flat.names), "trained": json.dumps(source.trained), "batch": str(batch),
            "dynamic_batch": json.dumps(dynamic_batch)}
    with atomic_path(out) as tmp, tempfile.TemporaryDirectory(prefix="nascore-export-") as scratch:
        target = tmp if int8_batches is None else Path(scratch) / "float32.onnx"
        with _module_trail(flat) as trail, torch.no_grad():
            try:
                EXPORTERS[fmt](flat, x, target, dynamic_batch, meta)
            except NascoreError:
                raise
            except Exception as exc:  # noqa: BLE001 - any exporter error: say where it happened
                where = f" in module {trail[-1]}" if trail else ""
                first = first_line(exc) or type(exc).__name__
                raise NascoreError(f"export to {fmt} failed{where}: {type(exc).__name__}: {first}") from None
        run = _runner(fmt, target)
        batches = [batch, batch + 2] if dynamic_batch else [batch]
        diffs = []
        for b in batches:
            xb = torch.randn((b, *shape[1:]), generator=torch.Generator().manual_seed(b))
            try:
                diffs.append(check(run, flat, xb))
            except NascoreError:
                raise
            except Exception as exc:  # noqa: BLE001 - the runtime rejects the file: say so
                raise NascoreError(f"the exported {fmt} file fails to run at batch {b}: {type(exc).__name__}: "
                                   f"{first_line(exc)}") from None
        diff, relative = max(d[0] for d in diffs), max(d[1] for d in diffs)
        if relative > TOLERANCE:
            raise NascoreError(f"the exported {fmt} file differs from eager PyTorch by {diff:.3g} (relative "
                               f"{relative:.3g} > {TOLERANCE:g}); nothing written")
        result = ExportResult(out, flat.names, batches, diff, relative, source.described,
                              f"{source.in_channels}x{source.input_size}x{source.input_size}")
        if int8_batches is not None:
            result.int8 = int8(source, flat, target, tmp, int8_batches, int8_recipe == "measure")
    return result


def export_ref(ref: str, fmt: str, out: str | Path, input_size: int | None = None, batch: int = 1,
               dynamic_batch: bool = False, int8_batches: int | None = None, int8_recipe: str = "measure"
               ) -> ExportResult:
    """``export`` of ``ref`` (``load_source``), or a plugin's export of it when a plugin claims it
    (``plugin_exporter``)."""
    exporter = plugin_exporter(ref)
    if exporter is not None:
        return exporter(fmt=fmt, out=out, input_size=input_size, batch=batch, dynamic_batch=dynamic_batch,
                        calibration_batches=int8_batches)
    source = load_source(ref, input_size)
    return export(source, fmt, out, batch, dynamic_batch, int8_batches, int8_recipe)


# -- reading exported files back ---------------------------------------------------------------------------------
@dataclass
class Exported:
    """An exported file: its format, its ``nascore.*`` metadata (empty for an ONNX file nascore did not write), its
    input's name and shape (None for a dynamic axis: the batch)."""

    path: Path
    format: str
    meta: dict[str, str]
    input_name: str
    input_shape: tuple[int | None, ...]
    quantized: bool = False  # an ONNX graph with QuantizeLinear / QLinear* nodes

    @property
    def batch(self) -> int | None:
        """The fixed batch of an image-batch input (N, C, H, W); None when dynamic or when the input is one image."""
        return self.input_shape[0] if len(self.input_shape) == 4 else None


def exported_format(path: Path) -> str | None:
    """``onnx``, ``exported-program`` or ``torchscript`` for a file of those formats, else None."""
    if path.suffix == ".onnx":
        return "onnx"
    if not _starts_with_zip(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(name.endswith("/archive_format") for name in names):
        return "exported-program"
    return "torchscript" if any("/code/" in name for name in names) else None


def read_exported(path: Path) -> Exported:
    """Format, metadata and input of an exported file. An ONNX file's input comes from its graph (any ONNX file
    whose input has a static shape but for a dynamic batch will do); an exported program's or TorchScript archive's
    from the metadata nascore export stores in it."""
    fmt = exported_format(path)
    if fmt is None:
        raise NascoreError(f"{path} is not an ONNX file, torch.export program or TorchScript archive")
    if fmt == "onnx":
        import onnx  # onnx: only when exporting

        check_user_file(path, "ONNX file", ONNX_MAX_BYTES)
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - any protobuf or onnx error: a file that is not ONNX
            raise NascoreError(f"{path} is not a readable ONNX file: {type(exc).__name__}: {exc}") from None
        meta = {p.key[len("nascore."):]: p.value for p in proto.metadata_props if p.key.startswith("nascore.")}
        if len(proto.graph.input) != 1:
            raise NascoreError(f"{path} has {len(proto.graph.input)} graph inputs; expected one image input")
        graph_input = proto.graph.input[0]
        dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
        bad = next((d for d in dims if d is not None and d < 1), None)
        if bad is not None:
            raise NascoreError(f"{path}: input {graph_input.name!r} has an axis of size {bad} ({dims}); expected "
                               "positive sizes")
        if None in dims[1:] or (None in dims[:1] and len(dims) != 4):
            raise NascoreError(f"{path}: input {graph_input.name!r} has dynamic axes {dims}; only the batch axis of "
                               "an (N, C, H, W) input may be dynamic")
        quantized = any(n.op_type == "QuantizeLinear" or n.op_type.startswith("QLinear") for n in proto.graph.node)
        return Exported(path, fmt, meta, graph_input.name, tuple(dims), quantized)
    try:
        with zipfile.ZipFile(path) as archive:
            entry = next((e for e in archive.infolist() if e.filename.endswith(f"/extra/{META_FILE}")), None)
            if entry is not None and entry.file_size > META_MAX_BYTES:  # what the zip declares, checked unread
                raise NascoreError(f"{path} holds a {META_FILE} of {human_size(entry.file_size)}; expected at most "
                                   f"{human_size(META_MAX_BYTES)}")
            meta = parse_user_json(archive.read(entry).decode(), f"{path}: {META_FILE}") if entry else None
        size, channels = int(meta["input_size"]), int(meta["in_channels"])
        batch = None if meta.get("dynamic_batch") == "true" else int(meta["batch"])
        if min(size, channels, batch or 1) < 1:
            raise ValueError("a size below 1")
        return Exported(path, fmt, meta, "input", (batch, channels, size, size))
    except (zipfile.BadZipFile, OSError, ValueError, TypeError, KeyError, AttributeError):
        raise NascoreError(f"{path} lacks a readable {META_FILE} with the input size, channels and batch that "
                           f"nascore export stores in a {fmt} file") from None

"""A detectron2 detector over a nascore backbone written for deployment through detectron2's own export path
(``detectron2.export.TracingAdapter``, as detectron2's ``tools/deploy/export_model.py --export-method tracing``),
then run from the written file and compared with eager PyTorch, as ``nascore export`` does for nascore networks.

Formats:

* ``onnx``: ``torch.onnx.export(TracingAdapter(...), dynamo=False)`` at opset 17, run back with ONNX Runtime.
  detectron2's own script uses its ``STABLE_ONNX_OPSET_VERSION`` (11), but torchvision exports ``ROIAlignV2``
  (``aligned=True``, detectron2's default pooler) correctly only from opset 16 (``coordinate_transformation_mode``),
  and nascore's FBNetV2 archs need 14 for HardSwish: at 11 a Faster R-CNN's boxes and classes come out wrong.
  Every op is a standard ONNX op (``RoiAlign``, ``NonMaxSuppression``): no caffe2 ops, ONNX Runtime runs it.
* ``torchscript``: ``torch.jit.trace`` of the same adapter, run back with ``torch.jit.load``.
* ``exported-program`` is refused: ``torch.export`` cannot trace detectron2's inference (its proposal and NMS
  steps have data-dependent shapes), and detectron2 has no ``torch.export`` path.

The file takes one image, a float tensor ``(3, H, W)`` of 0-255 pixels in the config's ``INPUT.FORMAT`` channel
order, of the size it was exported at (normalisation is inside the graph), and returns detectron2's
``Instances`` fields, flattened in name order: ``pred_boxes`` (N, 4; x1 y1 x2 y2 in input pixels),
``pred_classes`` (N), ``pred_masks`` (N, 1, 28, 28; Mask R-CNN, per box, before pasting), ``scores`` (N) and
``image_size`` (2). R-CNNs are traced as ``model.inference(..., do_postprocess=False)``, RetinaNet as
``model(...)``, as detectron2's script does. Metadata (config, input size, format, output names) goes into ONNX
``metadata_props`` under ``nascore.*`` keys, or into the TorchScript archive's ``nascore.json`` extra file.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.export import TracingAdapter
from detectron2.modeling import GeneralizedRCNN, RetinaNet, build_model
from torch import Tensor, nn

from nascore import ExportResult
from nascore.errors import NascoreError, first_line
from nascore.fileio import atomic_path

from .backbone import add_nascore_config

FORMATS = ("onnx", "torchscript")
UNSUPPORTED = {"exported-program": "torch.export cannot trace detectron2's inference (proposals and NMS have "
                                   "data-dependent shapes) and detectron2 has no torch.export path; use onnx or "
                                   "torchscript"}
#: ONNX opset: ROIAlignV2 (aligned=True) exports correctly from 16, HardSwish needs 14 (see the module docstring)
OPSET = 17
#: largest allowed max|file - eager| / max(1, max|eager|), per output, in float32 (as ``nascore export``)
TOLERANCE = 1e-4
META_FILE = "nascore.json"
TASK = "detectron2"
D2_SUFFIX = "_detectron2"


@dataclass
class DetectorExportResult(ExportResult):
    """An export's result with the detections each checked image gave (the comparison covered real boxes when
    there are some) and the ONNX opset (None for TorchScript)."""

    detections: list[int] = field(default_factory=list)
    opset: int | None = None


@dataclass
class Detector:
    """What to export: a detectron2 model (eval mode, CPU), its config, and how it was found."""

    model: nn.Module
    cfg: CfgNode
    trained: bool
    described: str
    input_size: int
    arch: str = ""  # the backbone's arch: its JSON when MODEL.NASCORE.ARCH is a file, else its name


# -- sources ---------------------------------------------------------------------------------------------------
def load_config(config_file: Path) -> CfgNode:
    """A detectron2 config with ``MODEL.NASCORE`` keys; an arch path that no longer exists (a moved run directory)
    falls back to the ``<prefix>_arch.json`` beside the config."""
    if not config_file.is_file():
        raise NascoreError(f"detectron2 config {config_file} does not exist; expected a .yaml that nascore-detectron2 "
                           f"writes (<phase>_model{D2_SUFFIX}.yaml in a run directory)")
    cfg = add_nascore_config(get_cfg())
    try:
        cfg.merge_from_file(str(config_file))
    except Exception as exc:  # noqa: BLE001 - yacs raises KeyError / AssertionError / yaml errors
        raise NascoreError(f"detectron2 config {config_file} cannot be read: {type(exc).__name__}: {exc}") from None
    arch = cfg.MODEL.NASCORE.ARCH
    beside = config_file.with_name(config_file.stem + "_arch.json")
    if arch.endswith(".json") and not Path(arch).is_file() and beside.is_file():
        cfg.MODEL.NASCORE.ARCH = str(beside)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def detector_from_config(config_file: str | Path, weights: str | Path | None = None,
                         input_size: int | None = None) -> Detector:
    """A detector from a detectron2 config; weights from ``weights``, else the ``.pth`` beside the config, else
    ``MODEL.WEIGHTS``, else random (said so)."""
    config_file = Path(config_file)
    cfg = load_config(config_file)
    if weights is None:
        beside = config_file.with_suffix(".pth")
        weights = beside if beside.is_file() else (cfg.MODEL.WEIGHTS or None)
    if weights is not None and not Path(weights).is_file():
        raise NascoreError(f"weights {weights} of {config_file} do not exist; expected a detectron2 checkpoint (.pth)")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if weights is not None:
        DetectionCheckpointer(model).load(str(weights))
    size = input_size or int(cfg.INPUT.MIN_SIZE_TEST)
    kind = type(model).__name__
    what = f"trained weights {weights}" if weights is not None else "random weights, not trained"
    arch = cfg.MODEL.NASCORE.ARCH
    arch_text = Path(arch).read_text() if arch.endswith(".json") and Path(arch).is_file() else arch
    return Detector(model, cfg, weights is not None, f"{config_file} ({kind} over {arch}; {what})", size, arch_text)


def _spec_tasks(run_dir: Path) -> list[str] | None:
    """The task names of the run directory's spec.yaml (read as plain YAML: cheap, no validation), or None."""
    from nascore.rundir import SPEC_FILE

    spec = run_dir / SPEC_FILE
    if not spec.is_file():
        return None
    try:
        data = yaml.safe_load(spec.read_text())
    except (OSError, yaml.YAMLError):
        return None
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(tasks, list):
        return None
    return [t.get("name") if isinstance(t, dict) else t for t in tasks]


def owns(source: str | Path) -> bool:
    """Whether ``source`` is this plugin's to export: a run directory (or its ``*_model.pt``) whose spec has the
    ``detectron2`` task, or a ``*_detectron2.yaml`` config."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") and path.stem.endswith(D2_SUFFIX):
        return True
    run_dir = path if path.is_dir() else path.parent if path.suffix == ".pt" and path.is_file() else None
    if run_dir is None:
        return False
    return TASK in (_spec_tasks(run_dir) or [])


def load_detector(source: str | Path, input_size: int | None = None) -> Detector:
    """A run directory (its ``train_model.pt``), a ``<phase>_model.pt`` of a run with the ``detectron2`` task, or a
    ``*_detectron2.yaml`` config (weights: the ``.pth`` beside it)."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        return detector_from_config(path, input_size=input_size)
    if path.is_dir():
        model_file = path / "train_model.pt"
        if not model_file.is_file():
            others = sorted(p.name for p in path.glob("train*_model.pt"))
            hint = f"; it has {', '.join(others)}: pass one of them" if others else \
                " (train one with `nascore train` or a spec with a train: block)"
            raise NascoreError(f"run directory {path} has no trained model {model_file}{hint}")
    elif path.suffix == ".pt" and path.is_file():
        model_file = path
    else:
        raise NascoreError(f"{source} is not a run directory, a *_model.pt or a *{D2_SUFFIX}.yaml detectron2 config")
    tasks = _spec_tasks(model_file.parent) or []
    if tasks != [TASK]:
        raise NascoreError(f"run {model_file.parent} has tasks {tasks}; the detectron2 export needs a run whose only "
                           f"task is '{TASK}' (as the {D2_SUFFIX}.pth checkpoint the plugin writes)")
    size = input_size or _dataset_size(model_file.parent)
    config = model_file.with_name(model_file.stem + D2_SUFFIX + ".yaml")
    if config.is_file() and config.with_suffix(".pth").is_file():
        detector = detector_from_config(config, input_size=size)
    else:  # a run from before the plugin wrote detectron2 checkpoints: write them now, to a temp folder
        with tempfile.TemporaryDirectory() as tmp:
            config = _write_detectron2(model_file, Path(tmp) / (model_file.stem + D2_SUFFIX))
            detector = detector_from_config(config, input_size=size)
            detector.cfg.MODEL.NASCORE.ARCH = f"{model_file}:arch"  # the temp arch file is gone: see metadata 'arch'
    detector.described = f"{model_file} ({type(detector.model).__name__}, trained weights, task {TASK})"
    return detector


def _dataset_size(run_dir: Path) -> int | None:
    from nascore.rundir import SPEC_FILE

    try:
        data = yaml.safe_load((run_dir / SPEC_FILE).read_text())
        size = data["dataset"].get("image_size")
        return int(size) if size else None
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError):
        return None


def _write_detectron2(model_file: Path, prefix: Path) -> Path:
    from nascore.rundir import SPEC_FILE
    from nascore.spec import load_spec

    from .export import export_detectron2

    spec = load_spec(model_file.parent / SPEC_FILE)
    task = spec.tasks[0].create()
    info = spec.dataset.create().info()
    mean = std = None
    if info.mean is not None:
        mean, std = [255 * m for m in info.mean], [255 * s for s in info.std]
    _, config = export_detectron2(model_file, task, prefix, task.num_classes(info), mean, std)
    return config


# -- exporting -------------------------------------------------------------------------------------------------
def inference_function(model: nn.Module) -> Callable[[nn.Module, Tensor], Any]:
    """How detectron2's deploy script calls each meta-architecture for tracing (R-CNNs without the final resize,
    so Mask R-CNN returns per-box masks)."""
    if isinstance(model, GeneralizedRCNN):
        return lambda m, image: m.inference([{"image": image}], do_postprocess=False)[0]
    if isinstance(model, RetinaNet):
        return lambda m, image: m([{"image": image}])[0]["instances"]
    raise NascoreError(f"detectron2 export supports GeneralizedRCNN (Faster / Mask R-CNN) and RetinaNet, not "
                       f"{type(model).__name__}")


def output_names(adapter: TracingAdapter) -> list[str]:
    schema = adapter.outputs_schema
    keys = getattr(schema, "keys", None)
    if keys is None:
        raise NascoreError(f"unexpected detectron2 output schema {type(schema).__name__}; expected Instances")
    return [*keys, "image_size"]


def sample_image(size: int, seed: int) -> Tensor:
    """A seeded (3, size, size) image of 0-255 float pixels: what the file takes."""
    return torch.rand((3, size, size), generator=torch.Generator().manual_seed(seed)) * 255


def _export_onnx(adapter: TracingAdapter, image: Tensor, path: Path, names: list[str], meta: dict[str, str]) -> None:
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings from detectron2's asserts and shape arithmetic
        torch.onnx.export(adapter, (image,), str(path), dynamo=False, opset_version=OPSET, input_names=["image"],
                          output_names=names)
    proto = onnx.load(str(path))
    for key, value in meta.items():
        proto.metadata_props.add(key=f"nascore.{key}", value=value)
    onnx.save(proto, str(path))


def _export_torchscript(adapter: TracingAdapter, image: Tensor, path: Path, names: list[str],
                        meta: dict[str, str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(adapter, (image,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={META_FILE: json.dumps(meta)})


EXPORTERS = {"onnx": _export_onnx, "torchscript": _export_torchscript}


def _runner(fmt: str, path: Path) -> Callable[[Tensor], list[Tensor]]:
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise NascoreError("checking an ONNX export needs onnxruntime: pip install onnxruntime") from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x: [torch.from_numpy(o) for o in session.run(None, {"image": x.numpy()})]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path))
    return lambda x: list(module(x))


def compare(names: list[str], eager: list[Tensor], got: list[Tensor]) -> tuple[float, float]:
    """(largest absolute difference, largest per-output relative difference) between the file and eager; the
    same image gives the same number of detections, so shapes must match."""
    if len(got) != len(eager):
        raise NascoreError(f"the exported file returns {len(got)} outputs, eager PyTorch {len(eager)}")
    diff = relative = 0.0
    for name, e, g in zip(names, eager, got):
        if tuple(g.shape) != tuple(e.shape):
            raise NascoreError(f"output {name}: the exported file gives shape {tuple(g.shape)}, eager PyTorch "
                               f"{tuple(e.shape)} (a different number of detections)")
        if e.numel() == 0:
            continue
        d = (g.double() - e.double()).abs().max().item()
        diff = max(diff, d)
        relative = max(relative, d / max(1.0, e.double().abs().max().item()))
    return diff, relative


def _ties(names: list[str], eager: list[Tensor]) -> str:
    """A hint when eager scores tie (an untrained model): which tied detections are kept is up to the runtime."""
    scores = eager[names.index("scores")].sort().values if "scores" in names else torch.zeros(0)
    if len(scores) > 1 and (scores.diff() < 1e-6).any():
        return (" (eager PyTorch gives detections with equal scores, e.g. an untrained model: which of them are kept "
                "and in what order is up to the runtime; export trained weights)")
    return ""


def export_detector(detector: Detector, fmt: str, out: str | Path, seeds: tuple[int, ...] = (0, 1)
                    ) -> DetectorExportResult:
    """Write ``detector`` as ``fmt`` to ``out`` through detectron2's ``TracingAdapter``, after running the written
    file on seeded images (traced on the first) and comparing every output with eager PyTorch; on any failure a
    NascoreError and nothing written. Returns what was checked."""
    if fmt in UNSUPPORTED:
        raise NascoreError(f"format {fmt!r} is not supported for detectron2 models: {UNSUPPORTED[fmt]}")
    if fmt not in EXPORTERS:
        raise NascoreError(f"format {fmt!r} is not one of {', '.join(FORMATS)} (detectron2 models)")
    out = Path(out)
    if out.is_dir():
        raise NascoreError(f"--out {out} is a directory; expected a file name")
    model, cfg, size = detector.model.eval(), detector.cfg, detector.input_size
    images = [sample_image(size, s) for s in seeds]
    adapter = TracingAdapter(model, (images[0],), inference_function(model)).eval()
    with torch.no_grad():
        adapter(images[0])
    names = output_names(adapter)
    meta = {"config": cfg.dump(), "arch": detector.arch, "input_size": str(size), "input_format": str(cfg.INPUT.FORMAT),
            "input": f"float32 (3, {size}, {size}), 0-255 pixels", "outputs": json.dumps(names),
            "trained": json.dumps(detector.trained), "opset": str(OPSET) if fmt == "onnx" else ""}
    with atomic_path(out) as tmp:
        try:
            EXPORTERS[fmt](adapter, images[0], tmp, names, meta)
        except Exception as exc:  # noqa: BLE001 - any exporter error: say which and where
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise NascoreError(f"export of {type(model).__name__} to {fmt} failed: {type(exc).__name__}: "
                               f"{first}") from None
        try:
            run = _runner(fmt, tmp)
        except NascoreError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise NascoreError(f"the exported {fmt} file cannot be loaded: {type(exc).__name__}: "
                               f"{first_line(exc)}") from None
        diffs, detections = [], []
        for seed, image in zip(seeds, images):
            with torch.no_grad():
                eager = list(adapter(image))
            try:
                got = run(image)
            except Exception as exc:  # noqa: BLE001 - the runtime rejects the file: say so
                raise NascoreError(f"the exported {fmt} file fails to run on image seed {seed}: {type(exc).__name__}:"
                                   f" {first_line(exc)}") from None
            diffs.append(compare(names, eager, got))
            detections.append(int(eager[0].shape[0]))
        diff, relative = max(d[0] for d in diffs), max(d[1] for d in diffs)
        if relative > TOLERANCE:
            raise NascoreError(f"the exported {fmt} file differs from eager PyTorch by {diff:.3g} (relative "
                               f"{relative:.3g} > {TOLERANCE:g}); nothing written{_ties(names, eager)}")
    return DetectorExportResult(out, names, [1], diff, relative, detector.described, f"3x{size}x{size} image (0-255)",
                                detections=detections, opset=OPSET if fmt == "onnx" else None)


def export(source: str | Path, fmt: str, out: str | Path, input_size: int | None = None, batch: int = 1,
           dynamic_batch: bool = False, calibration_batches: int | None = None) -> DetectorExportResult:
    """``nascore export SOURCE`` for a detectron2 source (``load_detector``): one image per call (batch 1, no
    dynamic batch: detectron2's traced models take a single image), float32 only (``calibration_batches``, int8,
    is refused)."""
    if calibration_batches is not None:
        raise NascoreError("--int8 is not available for detectron2 models (their quantization is not checked); "
                           "export float32 (onnx or torchscript)")
    if batch != 1 or dynamic_batch:
        raise NascoreError("detectron2 models export for one image at a time: --batch 1 without --dynamic-batch")
    if input_size is not None and input_size < 32:
        raise NascoreError(f"--input-size must be at least 32 pixels for a detector with an FPN, not {input_size}")
    if fmt not in EXPORTERS:  # before loading anything
        reason = UNSUPPORTED.get(fmt, f"expected one of {', '.join(FORMATS)}")
        raise NascoreError(f"format {fmt!r} is not supported for detectron2 models: {reason}")
    return export_detector(load_detector(source, input_size), fmt, out)


def exporter_for(source: str) -> Callable[..., ExportResult] | None:
    """The ``nascore_exporter`` hook's answer: ``export`` bound to ``source`` when this plugin owns it, else None."""
    if not owns(source):
        return None

    def run(fmt: str, out: str | Path, input_size: int | None = None, batch: int = 1,
            dynamic_batch: bool = False, calibration_batches: int | None = None) -> ExportResult:
        return export(source, fmt, out, input_size, batch, dynamic_batch, calibration_batches)

    return run

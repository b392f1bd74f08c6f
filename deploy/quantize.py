"""``nascore export --int8``: ONNX Runtime's post-training static quantization of a checked float32 ONNX export.

The float32 file (dynamic batch axis, checked against eager PyTorch) is pre-processed (shape inference and graph
optimisation, ``quant_pre_process``) and quantized in QDQ format with per-channel int8 weights and uint8
activations (ONNX Runtime's default for x86 CPUs), calibrated by min-max on ``K`` shuffled batches of the run's
training split. Both files are then scored on the validation split through ONNX Runtime with the tasks' own
metrics, and timed at batch 1 on one thread. ONNX Runtime's path rather than torch.ao's PT2E: the result is a
plain ONNX file any ONNX Runtime runs, and its quantizer is the one ONNX Runtime maintains for its own kernels.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def quantize(fp32: Path, out: Path, images: list[Tensor]) -> None:
    """Write the int8 (QDQ) model of the ONNX file ``fp32`` to ``out``, calibrated on ``images``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )  # ONNX Runtime: only when a file runs on it

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(images)

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch.numpy()}

    prepared = fp32.with_name(fp32.stem + ".prepared.onnx")  # beside the float32 file, in its scratch folder
    try:
        # ONNX shape inference: the symbolic one (for transformers) gives up on multi-path fbnetv5 graphs
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    except Exception as exc:  # noqa: BLE001 - the quantizer rejects the graph: say so, write nothing
        first = first_line(exc) or type(exc).__name__
        raise NascoreError(f"int8 quantization with ONNX Runtime failed: {type(exc).__name__}: {first}") from None
    finally:
        prepared.unlink(missing_ok=True)


def int8(source: ExportSource, flat: Flat, fp32: Path, out: Path, k: int) -> Int8Result:
    """Quantize the checked float32 export ``fp32`` into ``out`` and compare the two on the run's data."""
    import onnx  # onnx: only when exporting

    data = source.data
    assert data is not None, "export() refuses --int8 without the run's data"
    images = calibration_batches(data, k)
    quantize(fp32, out, images)
    shape = (1, source.in_channels, source.input_size, source.input_size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        template = source.model(x)
        float32, quantized = OnnxNetwork(fp32, template), OnnxNetwork(out, template)
        eager = torch.cat([t.flatten() for t in flat(x)])
        got = torch.cat([t.flatten() for _, t in flatten(quantized(x))])
    val = list(loader(data.parts.val_set, data.batch_size, data.parts.collate, shuffle=False))
    scores = [evaluate(net, val, data.tasks, torch.device("cpu")) for net in (source.model, float32, quantized)]
    backend = OnnxRuntimeBackend(threads=1)
    latency = tuple(backend.time_session(backend.load(str(f)), shape, MIN_RUN_TIME).median_ms for f in (fp32, out))
    result = Int8Result(sum(len(i) for i in images), {key: (scores[0][key], scores[1][key], scores[2][key])
                                                      for key in scores[0]},
                        latency, (got - eager).abs().max().item())
    # the float32 file's nascore.* metadata (the quantizer may drop it), and what int8 did
    proto = onnx.load(str(out))
    present = {prop.key for prop in proto.metadata_props}
    for prop in onnx.load(str(fp32)).metadata_props:
        if prop.key not in present:
            proto.metadata_props.add(key=prop.key, value=prop.value)
    proto.metadata_props.add(key="nascore.int8", value=json.dumps({
        "quantizer": "onnxruntime quantize_static, QDQ, per-channel int8 weights, uint8 activations, min-max",
        "calibration_images": result.calibration_images,
        "val": {key: {"float32": f, "int8": q} for key, (_, f, q) in result.metrics.items()}}))
    onnx.save(proto, str(out))
    return result


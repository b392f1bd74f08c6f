"""Deployment export of detectron2 detectors over nascore backbones through detectron2's ``TracingAdapter``: ONNX
(run back in ONNX Runtime) and TorchScript (``torch.jit.load``) match eager PyTorch; a run directory with the
``detectron2`` task is routed to it by the ``nascore_exporter`` hook; bad input is a NascoreError, nothing written."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from d2_helpers import needs_detectron2, small_config

pytestmark = needs_detectron2


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def detector(model: str = "faster_rcnn", arch: str = "fbnet_a"):
    from detectron2.modeling import build_model

    from nascore_detectron2.deploy import Detector

    cfg = small_config(model, arch)
    torch.manual_seed(0)
    m = build_model(cfg).eval()
    if model == "retinanet":  # its init scores every anchor 0.01 (the prior): ties, which runtimes break differently
        for conv in m.head.modules():
            if isinstance(conv, torch.nn.Conv2d):
                torch.nn.init.normal_(conv.weight, std=0.1)
        torch.nn.init.constant_(m.head.cls_score.bias, -2.0)
    return Detector(m, cfg, False, f"{model} over {arch} (random weights)", 64, arch)


@pytest.mark.parametrize(("model", "arch", "fmt"), [("faster_rcnn", "fbnet_a", "onnx"),
                                                    ("faster_rcnn", "fbnetv2_f1", "torchscript"),
                                                    ("retinanet", "fbnet_a", "onnx"),
                                                    ("mask_rcnn", "fbnet_a", "onnx")])
def test_detector_exports_runs_and_matches_eager(model, arch, fmt, tmp_path):
    from nascore_detectron2.deploy import TOLERANCE, export_detector, sample_image

    det = detector(model, arch)
    out = tmp_path / f"model.{fmt}"
    result = export_detector(det, fmt, out)
    assert out.is_file() and result.relative <= TOLERANCE
    expected = ["pred_boxes", "pred_classes", *(["pred_masks"] if model == "mask_rcnn" else []), "scores",
                "image_size"]
    assert result.outputs == expected
    assert min(result.detections) > 0  # the comparison covered real detections
    # independently of the check: the file, loaded here, on a new image, gives eager detectron2's instances
    image = sample_image(64, 7)
    with torch.no_grad():
        if model == "retinanet":
            eager = det.model([{"image": image}])[0]["instances"]
        else:
            eager = det.model.inference([{"image": image}], do_postprocess=False)[0]
    if fmt == "onnx":
        import onnx
        import onnxruntime

        meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        assert json.loads(meta["nascore.outputs"]) == expected and meta["nascore.input_size"] == "64"
        assert meta["nascore.arch"] == arch and "build_nascore_fpn_backbone" in meta["nascore.config"]
        got = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
            None, {"image": image.numpy()})
        got = dict(zip(expected, (torch.from_numpy(g) for g in got)))
    else:
        extra = {"nascore.json": ""}
        loaded = torch.jit.load(str(out), _extra_files=extra)
        assert json.loads(extra["nascore.json"])["outputs"] == json.dumps(expected)
        got = dict(zip(expected, loaded(image)))
    assert len(got["scores"]) == len(eager)
    torch.testing.assert_close(got["pred_boxes"], eager.pred_boxes.tensor, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(got["scores"], eager.scores, atol=1e-4, rtol=1e-4)
    assert torch.equal(got["pred_classes"], eager.pred_classes)


def write_run(tmp_path, task: dict) -> tuple:
    """A run directory as `nascore train` leaves it (spec.yaml, train_model.pt; random weights: quick)."""
    from nascore.arch import arch_space, resolve_arch
    from nascore.fileio import save_checkpoint
    from nascore.spec import load_spec
    from nascore.task import build_network

    run = tmp_path / "run"
    run.mkdir()
    spec = {"seed": 0,
            "dataset": {"name": "digit-scenes", "image_size": 64, "num_train": 16, "num_val": 16, "num_test": 16,
                        "cache_dir": str(tmp_path / "cache")},
            "tasks": [task], "space": {"name": "fbnet", "width": 0.25, "input_size": 64},
            "strategy": {"name": "dnas", "epochs": 2, "warmup_epochs": 1, "batch_size": 8}}
    (run / "spec.yaml").write_text(yaml.safe_dump(spec))
    loaded = load_spec(run / "spec.yaml")
    arch = resolve_arch("fbnet_a")
    torch.manual_seed(0)
    network = build_network(arch_space(arch, "fbnet_a").build(arch), [t.create() for t in loaded.tasks],
                            loaded.dataset.create().info())
    save_checkpoint({"arch": arch.model_dump(mode="json"), "network": network.state_dict()}, run / "train_model.pt")
    return run, network.eval()


def test_nascore_exporter_hook_routes_a_detectron2_run(tmp_path):
    from nascore.registry import get_registry
    from nascore_detectron2 import plugin

    run, network = write_run(tmp_path, {"name": "detectron2", "fpn_channels": 16, "proposals": 16,
                                        "box_head_dim": 64})
    exporter = get_registry().hook.nascore_exporter(source=str(run))
    assert exporter is not None  # the installed plugin answers through nascore's registry
    out = tmp_path / "detector.onnx"
    result = plugin.nascore_exporter(str(run))(fmt="onnx", out=out, input_size=None, batch=1, dynamic_batch=False)
    assert out.is_file() and result.out == out
    assert "train_model.pt" in result.described and result.input.startswith("3x64x64")
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["nascore.arch"])["space"] == "fbnet"
    # the exported graph is the run's trained network: same detections as nascore's own eval forward
    import onnxruntime

    from nascore.tasks.digit_scenes import MEAN, STD
    from nascore_detectron2.deploy import sample_image

    raw = sample_image(64, 3)
    normalised = (raw / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    with torch.no_grad():
        ours = network(normalised[None])["detectron2"].instances[0]
    got = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": raw.numpy()})
    boxes, scores = torch.from_numpy(got[0]), torch.from_numpy(got[2])
    assert len(scores) == len(ours) > 0
    torch.testing.assert_close(boxes, ours.pred_boxes.tensor, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(scores, ours.scores, atol=1e-4, rtol=1e-4)
    # the same run through its detectron2 config (written at run end by the plugin), TorchScript this time
    from nascore_detectron2.deploy import _write_detectron2

    config = _write_detectron2(run / "train_model.pt", run / "train_model_detectron2")
    result = plugin.nascore_exporter(str(config))(fmt="torchscript", out=tmp_path / "detector.ts")
    assert result.relative <= 1e-4 and "trained weights" in result.described


def test_sources_it_does_not_own_are_left_to_nascore(tmp_path):
    from nascore_detectron2.plugin import nascore_exporter

    run, _ = write_run(tmp_path, {"name": "classification"})
    assert nascore_exporter(str(run)) is None
    assert nascore_exporter("fbnet_a") is None
    assert nascore_exporter(str(tmp_path / "missing")) is None


def test_bad_input_is_an_error_and_writes_nothing(tmp_path, monkeypatch):
    from nascore.errors import NascoreError
    from nascore_detectron2 import deploy

    out = tmp_path / "model.onnx"
    det = detector()
    with pytest.raises(NascoreError, match="'exported-program' is not supported for detectron2 models: torch.export"):
        deploy.export_detector(det, "exported-program", out)
    with pytest.raises(NascoreError, match="'tflite' is not one of onnx, torchscript"):
        deploy.export_detector(det, "tflite", out)
    with pytest.raises(NascoreError, match="is a directory; expected a file name"):
        deploy.export_detector(det, "onnx", tmp_path)
    with pytest.raises(NascoreError, match=r"detectron2 config .*missing_detectron2.yaml does not exist; expected"):
        deploy.export(tmp_path / "missing_detectron2.yaml", "onnx", out)
    with pytest.raises(NascoreError, match="--int8 is not available for detectron2 models"):
        deploy.export(tmp_path / "missing_detectron2.yaml", "onnx", out, calibration_batches=8)
    with pytest.raises(NascoreError, match="one image at a time: --batch 1 without --dynamic-batch"):
        deploy.export(tmp_path / "missing_detectron2.yaml", "onnx", out, batch=2)
    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.yaml").write_text(yaml.safe_dump({"tasks": [{"name": "detectron2"}]}))
    with pytest.raises(NascoreError, match=r"has no trained model .*train_model.pt \(train one"):
        deploy.export(run, "onnx", out)
    # a file that runs but disagrees with eager PyTorch: an error naming the difference, and no file left
    real = deploy._runner
    monkeypatch.setattr(deploy, "_runner", lambda fmt, path: (lambda x: [t + 1 for t in real(fmt, path)(x)]))
    with pytest.raises(NascoreError, match=r"differs from eager PyTorch by .* > 0.0001\); nothing written"):
        deploy.export_detector(det, "onnx", out)
    assert list(tmp_path.iterdir()) == [run]

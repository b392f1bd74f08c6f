"""The light CenterNet-style detection task: target encoding and decoding round trip, mAP by hand, training,
and a three-task REINFORCE search."""
from __future__ import annotations

import json
import math

import pytest
import torch

from nascore.arch import Arch
from nascore.dataset import DataInfo
from nascore.fileio import load_checkpoint
from nascore.task import build_network
from nascore.tasks.detection import Detection, decode, encode, gaussian_radius
from tiny import REINFORCE, all_keep_backbone, search, train_losses

BOXES = [torch.tensor([[4.0, 6.0, 20.0, 22.0], [30.0, 8.0, 46.0, 40.0]]), torch.tensor([[10.0, 10.0, 26.0, 30.0]])]
CLASSES = [torch.tensor([3, 7]), torch.tensor([1])]


def perfect_output(stride: int = 8, shape=(8, 8)):
    heat, size, offset, mask = encode(BOXES, CLASSES, 10, shape, stride)
    logits = torch.logit(heat.clamp(1e-6, 1 - 1e-6))
    return (logits, size, offset), mask


def test_encoding_puts_unit_peaks_at_box_centres():
    (logits, size, offset), mask = perfect_output()
    heat = torch.sigmoid(logits)
    assert int(mask.sum()) == 3
    # box 1 of image 0: centre (38, 24) px -> cell (4, 3) at stride 8, size (2, 4) cells, offset (0.75, 0)
    assert heat[0, 7, 3, 4] == pytest.approx(1.0, abs=1e-5)
    assert size[0, :, 3, 4].tolist() == [2.0, 4.0] and offset[0, :, 3, 4].tolist() == [0.75, 0.0]
    assert gaussian_radius(2, 4) >= 0


def test_decoding_a_perfect_output_returns_the_boxes():
    output, _ = perfect_output()
    for result, boxes, classes in zip(decode(output, 8, top_k=5), BOXES, CLASSES):
        kept = result["scores"] > 0.99
        order = torch.argsort(result["labels"][kept])
        torch.testing.assert_close(result["boxes"][kept][order], boxes[torch.argsort(classes)])
        assert sorted(result["labels"][kept].tolist()) == sorted(classes.tolist())


def test_map_is_one_for_perfect_detections_and_lower_for_shifted_ones():
    task = Detection({"num_classes": 10})
    task.build_head([{"num_chs": 8, "reduction": 8}], None, None)
    targets = {"boxes": BOXES, "classes": CLASSES}
    output, _ = perfect_output()
    metric = task.metrics(torch.device("cpu"))
    task.update_metrics(metric, output, targets)
    assert task.compute_metrics(metric)["map"] == pytest.approx(1.0)
    logits, size, offset = output
    metric = task.metrics(torch.device("cpu"))
    task.update_metrics(metric, (logits, size, offset + 0.25), targets)  # every box moved by 2 px: IoU 0.62-0.7
    result = task.compute_metrics(metric)
    assert 0 < result["map"] < 1 and result["map_50"] == pytest.approx(1.0)


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    task = Detection({})
    net = build_network(all_keep_backbone(64), [task], DataInfo(3, 64, {"classes": 10})).train()
    losses = train_losses(net, task, torch.randn(2, 3, 64, 64), {"boxes": BOXES, "classes": CLASSES}, 40)
    assert math.isfinite(losses[-1]) and losses[-1] < 0.5 * losses[0]


@pytest.mark.slow
def test_three_task_reinforce_search(tmp_path):
    import yaml

    from nascore.cli import main

    search(tmp_path, [{"name": "classification"}, {"name": "segmentation", "channels": 16},
                      {"name": "detection", "channels": 16}], REINFORCE, pareto={"samples": 0})
    for task in ("classification", "segmentation", "detection"):
        assert Arch.load(tmp_path / "run" / f"arch_{task}.json").task == task
    last = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1]
    assert '"val/detection/map"' in last and '"loss/detection"' in last
    # each task's arch is retrained alone by `nascore train`: only its own head, loss and metrics
    path = tmp_path / "spec.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["train"] = {"epochs": 1, "batch_size": 16}
    path.write_text(yaml.safe_dump(spec))
    for task in ("classification", "segmentation", "detection"):
        out = tmp_path / f"train_{task}"
        assert main(["train", str(tmp_path / "run" / f"arch_{task}.json"), "--spec", str(path), "--out",
                     str(out)]) == 0
        result = json.loads((out / "summary.json").read_text())["archs"]
        assert list(result) == [task]
        assert {k.split("/")[1] for k in result[task]["train"] if k.startswith("val/")} == {task}
        state = load_checkpoint(out / "train_model.pt")
        assert {k.split(".")[1] for k in state["network"] if k.startswith("heads.")} == {task}

"""BMTAS's dense tasks: the DeepLabv3+-style head, balanced BCE, max F-measure (saliency), ODS-style F (edges)."""
from __future__ import annotations

import math

import pytest
import torch

from nascore.arch import arch_space, resolve_arch
from nascore.dataset import DataInfo
from nascore.errors import SpecError
from nascore.spec import validate_spec
from nascore.task import build_network
from nascore.tasks.binary import balanced_bce
from nascore.tasks.deeplab import DeepLabV3PlusHead
from nascore.tasks.digit_scenes import SceneConfig, SceneSplit, collate
from nascore.tasks.edge_metric import ODSFMeasure
from nascore.tasks.edges import Edges
from nascore.tasks.saliency import Saliency
from nascore.tasks.segmentation import Segmentation
from tiny import all_keep_backbone, train_losses

DATA = DataInfo(3, 64, {"semantic": 11, "saliency": 2, "edges": 2})


def bce_by_hand(logits, labels, w):
    total = 0.0
    for x, y in zip(logits, labels):
        s = 1 / (1 + math.exp(-x))
        total += -w * y * math.log(s) - (1 - w) * (1 - y) * math.log(1 - s)
    return total / len(logits)


def test_balanced_bce_by_hand():
    logits, labels = [2.0, -1.0, 0.5, -3.0], [1.0, 0.0, 0.0, 0.0]
    got = balanced_bce(torch.tensor(logits), torch.tensor(labels))
    assert float(got) == pytest.approx(bce_by_hand(logits, labels, 0.75), rel=1e-6)  # 3 of 4 pixels negative
    got = balanced_bce(torch.tensor(logits), torch.tensor(labels), 0.95)
    assert float(got) == pytest.approx(bce_by_hand(logits, labels, 0.95), rel=1e-6)
    # the reference's form: BCE with pos_weight w / (1 - w), divided by 1 / (1 - w)
    w = 0.95
    ref = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(logits), torch.tensor(labels),
                                                               pos_weight=torch.tensor(w / (1 - w))) * (1 - w)
    assert float(got) == pytest.approx(float(ref), rel=1e-6)


def test_max_f_measure_by_hand():
    task = Saliency({"thresholds": 3})  # thresholds 0.25, 0.5, 0.75
    metric = task.metrics(torch.device("cpu"))
    probs = torch.tensor([0.9, 0.6, 0.3, 0.1]).view(1, 1, 2, 2)
    labels = torch.tensor([1, 0, 1, 0]).view(1, 2, 2)
    task.update_metrics(metric, torch.logit(probs), {"saliency": labels})
    # 0.25: P 2/3, R 1 -> F 0.7222; 0.5: P 1/2, R 1/2 -> 0.5; 0.75: P 1, R 1/2 -> 1.3 * 0.5 / 0.8 = 0.8125
    assert task.compute_metrics(metric)["max_f"] == pytest.approx(0.8125, abs=1e-5)


def test_ods_f_by_hand():
    probs = torch.tensor([[[0.9, 0.0, 0.0, 0.0, 0.8]]])
    target = torch.tensor([[[0, 1, 0, 0, 0]]])
    near = ODSFMeasure(1, tolerance=1)  # threshold 0.5: predictions at columns 0 and 4, the edge at 1
    near.update(probs, target)
    assert float(near.compute()) == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # P 1/2 (column 0 is near), R 1
    exact = ODSFMeasure(1, tolerance=0)
    exact.update(probs, target)
    assert float(exact.compute()) == 0.0
    # the best single threshold over the dataset: 3 thresholds; only 0.75 drops the far false positive
    best = ODSFMeasure(3, tolerance=1)
    best.update(torch.tensor([[[0.9, 0.0, 0.0, 0.0, 0.6]]]), target)
    assert float(best.compute()) == pytest.approx(1.0)
    # the default tolerance follows the image diagonal: 1 px at 64 x 64, 0 at 32 x 32
    for size, expected in ((64, 1), (32, 0)):
        m = ODSFMeasure(1)
        p, t = torch.zeros(1, size, size), torch.zeros(1, size, size, dtype=torch.long)
        p[0, 10, 10], t[0, 10, 11] = 0.9, 1
        m.update(p, t)
        assert float(m.compute()) == pytest.approx(float(expected))


@pytest.mark.parametrize("size", [64, 96])
def test_deeplab_head_shapes(size):
    arch = resolve_arch("mobilenet_v2")
    backbone = arch_space(arch, "mobilenet_v2", input_size=size).build(arch)
    head = DeepLabV3PlusHead(backbone.feature_info, 5, channels=32).eval()
    assert head.reduction == 4
    with torch.no_grad():
        assert head(backbone(torch.randn(2, 3, size, size))).shape == (2, 5, size, size)
    with pytest.raises(ValueError, match="reduction 4"):
        DeepLabV3PlusHead([{"num_chs": 8, "reduction": 2}], 1)


def test_three_dense_tasks_learn_on_digit_scenes():
    data = SceneSplit(SceneConfig(image_size=64, num_train=16, num_val=8), "train")
    images, targets = collate([data[i] for i in range(8)])
    tasks = [Segmentation({"head": "deeplabv3plus", "channels": 16}), Saliency({"channels": 16}),
             Edges({"channels": 16})]
    torch.manual_seed(0)
    net = build_network(all_keep_backbone(64), tasks, DATA)
    for task in tasks:
        losses = train_losses(net, task, images, targets, steps=12)
        assert losses[-1] < 0.8 * losses[0], (task.name, losses)
        metric = task.metrics(torch.device("cpu"))
        with torch.no_grad():
            task.update_metrics(metric, net.eval()(images)[task.name], targets)
        net.train()
        value = task.compute_metrics(metric)[task.primary_metric]
        assert 0.0 <= value <= 1.0


def spec(**edges) -> dict:
    return {"dataset": {"name": "digit-scenes", "image_size": 64},
            "tasks": [{"name": "segmentation", "head": "deeplabv3plus"}, {"name": "saliency"},
                      {"name": "edges", **edges}],
            "space": {"name": "fbnet", "input_size": 64}, "strategy": {"name": "dnas", "epochs": 2,
                                                                       "warmup_epochs": 1}}


def test_spec_with_the_dense_tasks():
    s = validate_spec(spec())
    assert [t.name for t in s.tasks] == ["segmentation", "saliency", "edges"]
    assert s.tasks[2].config.loss_weight == 50.0 and s.tasks[1].config.loss_weight == 5.0
    with pytest.raises(SpecError, match=r"tasks\[2\]\.positive_weight"):
        validate_spec(spec(positive_weight=1.5))

"""The light semantic-segmentation task: head shapes over several spaces, mIoU by hand, training, and a
two-task REINFORCE search (classification + segmentation) writing one arch per task."""
from __future__ import annotations

import pytest
import torch

from nascore.arch import Arch
from nascore.dataset import DataInfo
from nascore.spaces.fbnet import FBNetSpace
from nascore.spaces.fbnetv5 import FBNetV5Space
from nascore.task import build_network
from nascore.tasks.segmentation import Segmentation
from tiny import REINFORCE, all_keep_backbone, search, train_losses

DATA = DataInfo(3, 32, {"semantic": 11})


@pytest.mark.parametrize("space", [FBNetSpace({"width": 0.25, "input_size": 32}),
                                   FBNetV5Space({"width": 0.25, "input_size": 32, "blocks": [1, 1, 1, 1]})])
def test_head_predicts_every_pixel_at_input_size(space):
    choices = {d.name: d.options[0] for d in space.decisions()}
    backbone = space.build(Arch(space=space.name, config=space.config.model_dump(mode="json"), choices=choices))
    net = build_network(backbone, [Segmentation({})], DATA).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))["segmentation"]
    assert out.shape == (2, 11, 32, 32)


def test_miou_against_a_hand_checked_mask():
    task = Segmentation({"num_classes": 3})
    task.build_head([{"num_chs": 8, "reduction": 4}], None, None)
    metric = task.metrics(torch.device("cpu"))
    target = torch.tensor([[[0, 1], [1, 1]]])
    logits = torch.zeros(1, 3, 2, 2)
    for (i, j), c in {(0, 0): 0, (0, 1): 0, (1, 0): 1, (1, 1): 2}.items():
        logits[0, c, i, j] = 1.0
    task.update_metrics(metric, logits, {"semantic": target})
    # class 0: 1 / 2; class 1: 1 / 3; class 2: 0 / 1 -> mean 0.2778
    assert task.compute_metrics(metric)["miou"] == pytest.approx((1 / 2 + 1 / 3 + 0) / 3, abs=1e-4)


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    task = Segmentation({})
    net = build_network(all_keep_backbone(32), [task], DATA).train()
    images = torch.randn(8, 3, 32, 32)
    target = {"semantic": (images[:, 0] > 0.5).long() * 3}  # a learnable mask: bright pixels are class 3
    losses = train_losses(net, task, images, target, 30)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.slow
def test_two_task_reinforce_search_writes_an_arch_per_task(tmp_path):
    search(tmp_path, [{"name": "classification"}, {"name": "segmentation", "channels": 16}], REINFORCE,
           pareto={"samples": 0})
    for task in ("classification", "segmentation"):
        arch = Arch.load(tmp_path / "run" / f"arch_{task}.json")
        assert arch.task == task and len(arch.choices) == 10
    last = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1]
    assert '"val/segmentation/miou"' in last and '"loss/segmentation"' in last

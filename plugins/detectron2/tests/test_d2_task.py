"""The ``detectron2`` task in nascore specs: COCO metric by hand, `nascore train` with Faster R-CNN /
RetinaNet / Mask R-CNN, the exported checkpoint in detectron2, and the task as a search-time head."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from d2_helpers import needs_detectron2

pytestmark = needs_detectron2

BOXES = [torch.tensor([[4.0, 6.0, 20.0, 22.0], [30.0, 8.0, 46.0, 40.0]]), torch.tensor([[10.0, 10.0, 26.0, 30.0]])]
CLASSES = [torch.tensor([3, 7]), torch.tensor([1])]


def predictions(shift: float = 0.0):
    from detectron2.structures import Boxes, Instances

    return [Instances((48, 48), pred_boxes=Boxes(b + shift), scores=torch.ones(len(b)), pred_classes=c)
            for b, c in zip(BOXES, CLASSES)]


def test_coco_metric_by_hand():
    from nascore_detectron2.task import COCOMetric

    targets = {"boxes": BOXES, "classes": CLASSES}
    metric = COCOMetric(10, False)
    metric.update(predictions(), targets, (48, 48))
    result = metric.compute()
    assert result["AP"] == pytest.approx(100.0) and result["AP50"] == pytest.approx(100.0)
    metric = COCOMetric(10, False)
    # every box moved by 2 px: IoUs 196/316 = 0.620 (class 3), 420/604 = 0.695 (7), 252/388 = 0.649 (1);
    # of COCO's thresholds .50:.05:.95 they pass 3, 4 and 3, so AP = mean(30, 40, 30)
    metric.update(predictions(shift=2.0), targets, (48, 48))
    result = metric.compute()
    assert result["AP50"] == pytest.approx(100.0) and result["AP75"] == pytest.approx(0.0)
    assert result["AP"] == pytest.approx(100 / 3)


def write_spec(tmp_path, task: dict, **extra) -> str:
    spec = {"seed": 0,
            "dataset": {"name": "digit-scenes", "image_size": 64, "num_train": 32, "num_val": 16, "num_test": 8,
                        "cache_dir": str(tmp_path / "cache")},
            "tasks": [task],
            "space": {"name": "fbnet", "width": 0.25, "input_size": 64},
            "strategy": {"name": "dnas", "epochs": 2, "warmup_epochs": 1, "batch_size": 16},
            "train": {"epochs": 1, "batch_size": 16, "lr": 0.02}, **extra}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize("model", ["faster_rcnn", "retinanet", "mask_rcnn"])
def test_nascore_train_reports_ap_and_exports_a_detectron2_checkpoint(model, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from nascore.arch import Arch, arch_space
    from nascore.cli import main
    from nascore.fileio import load_checkpoint
    from nascore.spec import load_spec
    from nascore.task import build_network
    from nascore.tasks.digit_scenes import MEAN, STD
    from nascore_detectron2 import add_nascore_config

    spec = write_spec(tmp_path, {"name": "detectron2", "model": model, "fpn_channels": 32, "proposals": 32})
    out = tmp_path / "run"
    assert main(["train", "fbnet_a", "--spec", spec, "--out", str(out)]) == 0
    result = json.loads((out / "summary.json").read_text())["archs"]["shared"]["train"]
    assert {"val/detectron2/AP", "val/detectron2/AP50"} <= set(result)
    assert ("val/detectron2/mask_AP" in result) == (model == "mask_rcnn")
    # the exported checkpoint loads into detectron2's own model and predicts what nascore's network does
    cfg = add_nascore_config(get_cfg())
    cfg.merge_from_file(str(out / "train_model_detectron2.yaml"))
    d2 = build_model(cfg).eval()
    DetectionCheckpointer(d2).load(str(out / "train_model_detectron2.pth"))
    exported = torch.load(out / "train_model_detectron2.pth", weights_only=False)["model"]
    state = d2.state_dict()
    assert set(exported) <= set(state) and set(state) - set(exported) <= {"pixel_mean", "pixel_std"}
    assert all(torch.equal(state[k], exported[k]) for k in exported)
    saved = load_checkpoint(out / "train_model.pt")
    arch = Arch.model_validate(saved["arch"])
    run_spec = load_spec(spec)
    task = run_spec.tasks[0].create()
    info = run_spec.dataset.create().info()
    network = build_network(arch_space(arch, "fbnet_a").build(arch), [task], info)
    network.load_state_dict(saved["network"])
    network.eval()
    image, _ = run_spec.dataset.create().split("val")[0]
    raw = image * torch.tensor(STD)[:, None, None] * 255 + torch.tensor(MEAN)[:, None, None] * 255
    with torch.no_grad():
        ours = network(image[None])["detectron2"].instances[0]
        theirs = d2([{"image": raw, "height": 64, "width": 64}])[0]["instances"]
    torch.testing.assert_close(theirs.pred_boxes.tensor, ours.pred_boxes.tensor, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(theirs.scores, ours.scores, atol=1e-4, rtol=1e-4)


def test_dnas_search_with_the_detectron2_head(tmp_path):
    from nascore.arch import Arch
    from nascore.cli import main

    spec = write_spec(tmp_path, {"name": "detectron2", "fpn_channels": 16, "proposals": 16},
                      pareto={"samples": 0})
    data = yaml.safe_load(open(spec))
    data.pop("train")  # search only
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(data))
    assert main(["run", str(tmp_path / "search.yaml"), "--out", str(tmp_path / "run")]) == 0
    assert Arch.load(tmp_path / "run" / "arch.json").space == "fbnet"
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert any(k.startswith("val/detectron2/") for k in last)


def test_fbnetv5_reinforce_search_with_the_detectron2_head(tmp_path):
    from nascore.arch import Arch
    from nascore.cli import main

    spec = {"seed": 0,
            "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 32, "num_val": 8, "num_test": 8,
                        "cache_dir": str(tmp_path / "cache")},
            "tasks": [{"name": "classification"}, {"name": "detectron2", "fpn_channels": 16, "proposals": 16}],
            "space": {"name": "fbnetv5", "input_size": 32, "width": 0.25, "blocks": [1, 1, 1, 1],
                      "head_channels": 64},
            "strategy": {"name": "reinforce", "epochs": 2, "warmup_epochs": 1, "batch_size": 16, "max_steps": 2,
                         "bn_batches": 1},
            "pareto": {"samples": 0}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["run", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "run")]) == 0
    assert Arch.load(tmp_path / "run" / "arch_detectron2.json").task == "detectron2"
    last = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1]
    assert '"loss/detectron2"' in last and '"val/detectron2/AP"' in last


def test_bad_model_name_is_a_spec_error(tmp_path, capsys):
    from nascore.cli import main

    spec = write_spec(tmp_path, {"name": "detectron2", "model": "yolo"})
    assert main(["train", "fbnet_a", "--spec", spec, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "model" in err and "faster_rcnn" in err and not (tmp_path / "run").exists()


def test_nascore_train_on_a_users_coco_dataset(tmp_path):
    """The `coco` dataset (here digit-scenes' own COCO export) feeds the detectron2 task like any user's data."""
    from detectron2.config import get_cfg

    from nascore.cli import main
    from nascore.tasks.datasets import IMAGENET_MEAN
    from nascore.tasks.digit_scenes import SceneConfig, export_coco
    from nascore_detectron2 import add_nascore_config

    e = tmp_path / "export"
    export_coco(SceneConfig(image_size=64, num_train=24, num_val=8, num_test=4), e, tmp_path / "cache")
    spec = yaml.safe_load(open(write_spec(tmp_path, {"name": "detectron2", "model": "mask_rcnn", "proposals": 16})))
    spec["dataset"] = {"name": "coco", "image_size": 64,
                       "train_json": str(e / "annotations" / "instances_train.json"),
                       "train_images": str(e / "train" / "images"),
                       "val_json": str(e / "annotations" / "instances_val.json"), "val_images": str(e / "val" / "images")}
    (tmp_path / "coco.yaml").write_text(yaml.safe_dump(spec))
    assert main(["train", "fbnet_a", "--spec", str(tmp_path / "coco.yaml"), "--out", str(tmp_path / "run")]) == 0
    result = json.loads((tmp_path / "run" / "summary.json").read_text())["archs"]["shared"]["train"]
    assert "val/detectron2/AP" in result and "val/detectron2/mask_AP" in result
    cfg = add_nascore_config(get_cfg())
    cfg.merge_from_file(str(tmp_path / "run" / "train_model_detectron2.yaml"))
    assert cfg.MODEL.PIXEL_MEAN == pytest.approx([255 * m for m in IMAGENET_MEAN])

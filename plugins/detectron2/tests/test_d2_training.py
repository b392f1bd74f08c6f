"""detectron2's own pipeline over a nascore backbone: digit-scenes registered as COCO, 20 SimpleTrainer
iterations, COCOEvaluator, DetectionCheckpointer round trip."""
from __future__ import annotations

import math
import statistics

import pytest
import torch
from d2_helpers import needs_detectron2, small_config

pytestmark = needs_detectron2


@pytest.fixture(scope="module")
def trained(digit_scenes_d2, tmp_path_factory):
    from detectron2.data import build_detection_train_loader
    from detectron2.engine import SimpleTrainer
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer

    torch.manual_seed(0)
    cfg = small_config("faster_rcnn", names=digit_scenes_d2)
    model = build_model(cfg)
    trainer = SimpleTrainer(model, build_detection_train_loader(cfg), build_optimizer(cfg, model))
    trainer.train(0, 20)
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    return cfg, model, losses


def test_twenty_iterations_reduce_the_loss(trained):
    _, _, losses = trained
    assert len(losses) == 20 and all(math.isfinite(v) for v in losses)
    assert statistics.mean(losses[-5:]) < 0.8 * statistics.mean(losses[:5])


def test_coco_evaluator_returns_ap_on_the_validation_split(trained, digit_scenes_d2, tmp_path):
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset

    cfg, model, _ = trained
    # After 20 iterations no class score may pass the default 0.05 test threshold, and COCOEvaluator's AP of no
    # detections is NaN: keep every detection (up to DETECTIONS_PER_IMAGE) so AP is computed on real boxes
    # whatever this machine's numerics made of the short training.
    predictor = model.roi_heads.box_predictor
    threshold, predictor.test_score_thresh = predictor.test_score_thresh, 0.0
    try:
        results = inference_on_dataset(model, build_detection_test_loader(cfg, digit_scenes_d2["val"]),
                                       COCOEvaluator(digit_scenes_d2["val"], output_dir=str(tmp_path)))
    finally:
        predictor.test_score_thresh = threshold
    assert {"AP", "AP50", "AP75"} <= set(results["bbox"])
    assert all(0.0 <= results["bbox"][k] <= 100.0 for k in ("AP", "AP50", "AP75"))  # NaN fails too


def test_checkpoint_round_trip(trained, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    cfg, model, _ = trained
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model_final")
    torch.manual_seed(1)
    fresh = build_model(cfg)
    DetectionCheckpointer(fresh).load(str(tmp_path / "model_final.pth"))
    ref, got = model.state_dict(), fresh.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    image = {"image": torch.randint(0, 255, (3, 64, 64)).float(), "height": 64, "width": 64}
    model.eval(), fresh.eval()
    with torch.no_grad():
        a, b = model([image])[0]["instances"], fresh([image])[0]["instances"]
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
    torch.testing.assert_close(a.scores, b.scores)


@pytest.mark.parametrize("model_name", ["retinanet", "mask_rcnn"])
def test_retinanet_and_mask_rcnn_train_on_registered_coco(model_name, digit_scenes_d2):
    from detectron2.data import build_detection_train_loader
    from detectron2.engine import SimpleTrainer
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer

    torch.manual_seed(0)
    cfg = small_config(model_name, names=digit_scenes_d2)
    model = build_model(cfg)
    trainer = SimpleTrainer(model, build_detection_train_loader(cfg), build_optimizer(cfg, model))
    trainer.train(0, 3)
    keys = set(trainer.storage.histories())
    assert ("loss_mask" in keys) == (model_name == "mask_rcnn")
    assert ("loss_cls" in keys) and math.isfinite(trainer.storage.history("total_loss").latest())

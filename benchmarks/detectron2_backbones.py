"""Faster R-CNN + FPN on digit-scenes with three backbones, through detectron2's own pipeline (needs the
nascore-detectron2 plugin and detectron2): (a) a searched nascore arch, (b) FBNet-C, (c) timm's
``mobilenetv3_large_100`` wrapped the same way (``MODEL.NASCORE.ARCH: timm:...``, random init).

Each trains from scratch with the same budget (``--iters`` SimpleTrainer iterations, batch ``--batch``, SGD
``--lr``, cosine-free step schedule off, no warm-up) on digit-scenes exported as COCO, then is scored by
``COCOEvaluator`` on the validation split. Multiply-adds: ``torch.utils.flop_counter`` over one
``--size`` x ``--size`` image, backbone alone and whole detector at inference. Time per iteration: the
median of the training steps after the first 10 (of all, in a run of 10 or fewer; data loading included),
``--threads`` threads.

    python benchmarks/detectron2_backbones.py --searched runs/fbnetv5-quality/search3_seed0/arch_detection.json

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless; a named arch stands in for the searched one):

    python benchmarks/detectron2_backbones.py --searched fbnet_a --iters 2 --batch 2 --size 64 --num-train 8 \
        --num-val 4 --threads 1 --data /tmp/d2-smoke
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nascore.costs.flops import count_macs
from nascore.tasks.digit_scenes import MEAN, STD, SceneConfig


def config(arch: str, names: dict[str, str], args: argparse.Namespace):
    from nascore_detectron2 import detection_config

    cfg = detection_config("faster_rcnn", 10, arch=arch, fpn_channels=64, anchor_scale=4.0, proposals=100,
                           box_head_dim=256)
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [255 * m for m in MEAN], [255 * s for s in STD]
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (args.size,), args.size
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = args.size, args.size
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.WARMUP_ITERS = args.batch, args.lr, 0
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (names["train"],), (names["val"],)
    cfg.SEED = 0
    return cfg


def run(label: str, arch: str, names: dict[str, str], args: argparse.Namespace) -> dict:
    from detectron2.data import build_detection_test_loader, build_detection_train_loader
    from detectron2.engine import SimpleTrainer
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer
    from detectron2.utils.events import EventStorage

    torch.manual_seed(0)
    cfg = config(arch, names, args)
    model = build_model(cfg)
    trainer = SimpleTrainer(model, build_detection_train_loader(cfg), build_optimizer(cfg, model))
    times, losses = [], []
    with EventStorage(0) as trainer.storage:
        for it in range(args.iters):
            trainer.iter = trainer.storage.iter = it
            start = time.perf_counter()
            trainer.run_step()
            times.append(time.perf_counter() - start)
            losses.append(trainer.storage.history("total_loss").latest())
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        ap = inference_on_dataset(model, build_detection_test_loader(cfg, names["val"]),
                                  COCOEvaluator(names["val"], output_dir=tmp))["bbox"]
    image = torch.zeros(1, 3, args.size, args.size)
    backbone = count_macs(model.backbone.bottom_up, image)
    total = count_macs(_Inference(model, args.size), image)
    return {"label": label, "arch": arch, "AP": ap["AP"], "AP50": ap["AP50"], "backbone_macs": backbone,
            "total_macs": total, "s_per_iter": statistics.median(times[10:] or times),
            "loss_first": statistics.mean(losses[:20]), "loss_last": statistics.mean(losses[-20:])}


class _Inference(torch.nn.Module):
    """detectron2's inference on one image tensor, so that FlopCounterMode can count a whole detector."""

    def __init__(self, model, size: int):
        super().__init__()
        self.model, self.size = model, size

    def forward(self, x):
        return self.model([{"image": x[0] * 255, "height": self.size, "width": self.size}])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searched", required=True,
                        help="a searched nascore arch file (e.g. arch_detection.json) or a named arch")
    parser.add_argument("--iters", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--size", type=int, default=128, help="digit-scenes image size")
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path("runs/detectron2-bench-data"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from nascore_detectron2.data import register_digit_scenes

    scenes = SceneConfig(image_size=args.size, num_train=args.num_train, num_val=args.num_val, num_test=50)
    names = register_digit_scenes("bench_digits", args.data / f"coco{args.size}_{args.num_train}_{args.num_val}",
                                  scenes)
    rows = [run(label, arch, names, args) for label, arch in (
        ("searched nascore arch", args.searched), ("FBNet-C", "fbnet_c"),
        ("timm mobilenetv3_large_100", "timm:mobilenetv3_large_100"))]
    print(f"Faster R-CNN + FPN (64 ch), digit-scenes {args.size}px, {args.num_train} train / {args.num_val} val images, "
          f"{args.iters} iterations x batch {args.batch}, SGD lr {args.lr}, torch {torch.__version__}, "
          f"{args.threads} threads")
    print("| backbone | box AP | AP50 | backbone MMACs | detector MMACs | s / iter | loss first 20 -> last 20 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} (`{Path(r['arch']).name}`) | {r['AP']:.1f} | {r['AP50']:.1f} | "
              f"{r['backbone_macs'] / 1e6:.1f} | {r['total_macs'] / 1e6:.1f} | {r['s_per_iter']:.3f} | "
              f"{r['loss_first']:.3f} -> {r['loss_last']:.3f} |")


if __name__ == "__main__":
    main()

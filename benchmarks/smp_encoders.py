"""segmentation-models-pytorch Unet on digit-scenes with three encoders, all through SMP's own timm-universal
path (``tu-<name>``): (a) a segmentation-searched nascore arch (registered with ``nascore.register_timm_model``),
(b) FBNet-C (``nascore_fbnet_c``), (c) timm's ``mobilenetv3_large_100`` (random init: nothing downloaded).

Each trains from scratch with the same budget (``--epochs`` over the train split, batch ``--batch``, AdamW
``--lr`` with a cosine schedule, cross-entropy) and is scored by mean IoU (torchmetrics, macro over the 11
classes) on the validation split; multiply-adds by ``torch.utils.flop_counter`` over one image, encoder
alone and whole model; seconds per training step (median).

    python benchmarks/smp_encoders.py --searched runs/fbnetv5-quality/search3_seed0/arch_segmentation.json

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless; a named arch stands in for the searched one):

    python benchmarks/smp_encoders.py --searched fbnet_a --epochs 1 --batch 4 --size 32 --num-train 10 --num-val 4 \
        --threads 1
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassJaccardIndex

import nascore
from nascore.costs.flops import count_macs, count_params
from nascore.data import loader
from nascore.tasks.digit_scenes import NUM_SEG_CLASSES, SceneConfig, SceneSplit, collate


def run(label: str, encoder: str, args: argparse.Namespace, scenes: SceneConfig) -> dict:
    torch.manual_seed(0)
    model = smp.Unet(f"tu-{encoder}", encoder_weights=None, classes=NUM_SEG_CLASSES)
    train, val = SceneSplit(scenes, "train"), SceneSplit(scenes, "val")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = []
    for epoch in range(args.epochs):
        for group in opt.param_groups:
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * epoch / args.epochs))
        model.train()
        for images, targets in loader(train, args.batch, collate, shuffle=True, seed=0, epoch=epoch):
            start = time.perf_counter()
            loss = F.cross_entropy(model(images), targets["semantic"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps.append(time.perf_counter() - start)
    model.eval()
    metric = MulticlassJaccardIndex(num_classes=NUM_SEG_CLASSES, average="macro")
    with torch.no_grad():
        for images, targets in loader(val, 64, collate, shuffle=False):
            metric.update(model(images).argmax(1), targets["semantic"])
    image = torch.zeros(1, 3, scenes.image_size, scenes.image_size)
    return {"label": label, "encoder": encoder, "miou": float(metric.compute()),
            "encoder_macs": count_macs(model.encoder, image), "macs": count_macs(model, image),
            "params": count_params(model), "s_per_step": statistics.median(steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searched", required=True, help="a segmentation-searched nascore arch file (or a named arch)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nascore.register_timm_model("searched_segmentation", args.searched)
    scenes = SceneConfig(image_size=args.size, num_train=args.num_train, num_val=args.num_val, num_test=50)
    rows = [run(label, enc, args, scenes) for label, enc in (
        ("searched nascore arch", "searched_segmentation"), ("FBNet-C", "nascore_fbnet_c"),
        ("timm mobilenetv3_large_100", "mobilenetv3_large_100"))]
    print(f"SMP Unet (default decoder), digit-scenes {args.size}px, {args.num_train} train / {args.num_val} val, "
          f"{args.epochs} epochs x batch {args.batch}, AdamW lr {args.lr} cosine, torch {torch.__version__}, "
          f"{args.threads} threads")
    print("| encoder | val mIoU | encoder MMACs | Unet MMACs | params (M) | s / step |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} (`tu-{r['encoder']}`) | {r['miou']:.3f} | {r['encoder_macs'] / 1e6:.1f} | "
              f"{r['macs'] / 1e6:.1f} | {r['params'] / 1e6:.2f} | {r['s_per_step']:.3f} |")


if __name__ == "__main__":
    main()

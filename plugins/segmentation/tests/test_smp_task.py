"""nascore-segmentation's task: SMP decoders over nascore encoders (every named arch, several decoders),
losses, mIoU by hand, training, a DNAS search with an SMP decoder, nascore train on a user's mask folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

pytest.importorskip("nascore_segmentation", reason="nascore-segmentation is not installed "
                                                   "(pip install -e plugins/segmentation)")

from nascore.arch import arch_space, resolve_arch  # noqa: E402
from nascore.dataset import DataInfo  # noqa: E402
from nascore.spaces.fbnet import FBNetSpace  # noqa: E402
from nascore.spaces.fbnetv2 import FBNetV2Space  # noqa: E402
from nascore.task import build_network  # noqa: E402
from nascore_segmentation import SemanticSegmentation  # noqa: E402
from nascore_segmentation.task import DECODERS  # noqa: E402

NAMED = sorted(list(FBNetSpace.named_archs()) + list(FBNetV2Space.named_archs()))
INFO = DataInfo(3, 64, {"semantic": 11})


def network(arch: str, **task):
    a = resolve_arch(arch)
    seg = SemanticSegmentation(task)
    return build_network(arch_space(a, arch).build(a), [seg], INFO), seg


@pytest.mark.parametrize("arch", NAMED)
def test_every_named_arch_as_an_smp_unet_encoder(arch):
    net, _ = network(arch)
    with torch.no_grad():
        assert net.eval()(torch.randn(2, 3, 64, 64))["semantic-segmentation"].shape == (2, 11, 64, 64)


@pytest.mark.parametrize("decoder", DECODERS)
def test_every_decoder_predicts_every_pixel(decoder):
    args = {"decoder_channels": 64} if decoder in ("FPN",) else {}
    net, _ = network("fbnet_a", decoder=decoder, decoder_args=args)
    h, w = (256, 288) if decoder == "PAN" else (64, 96)  # PAN's pyramid pools the stride-32 map down by 8
    with torch.no_grad():
        assert net.eval()(torch.randn(2, 3, h, w))["semantic-segmentation"].shape == (2, 11, h, w)


def test_losses_are_the_weighted_sum_of_smp_losses():
    import segmentation_models_pytorch as smp

    _, seg = network("fbnet_a", loss=[{"name": "ce", "weight": 0.5}, {"name": "dice", "weight": 2.0}])
    logits, mask = torch.randn(2, 11, 16, 16), torch.randint(0, 11, (2, 16, 16))
    expected = 0.5 * torch.nn.functional.cross_entropy(logits, mask) + 2.0 * smp.losses.DiceLoss("multiclass")(
        logits, mask)
    torch.testing.assert_close(seg.loss(logits, {"semantic": mask}), expected)


def test_miou_against_a_hand_checked_mask():
    seg = SemanticSegmentation({"num_classes": 3})
    seg.build_head([{"num_chs": 8, "reduction": r, "module": str(r)} for r in (2, 4, 8, 16, 32)], None,
                   DataInfo(3, 64, {"semantic": 3}))
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 1], [2, 2, 2, 0], [2, 2, 2, 2]]])
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    metric = seg.metrics(torch.device("cpu"))
    seg.update_metrics(metric, logits, {"semantic": target})
    # class 0: TP 3, FP 1, FN 1 -> 3/5; class 1: TP 4, FP 1 -> 4/5; class 2: TP 7, FN 1 -> 7/8
    assert seg.compute_metrics(metric)["miou"] == pytest.approx((3 / 5 + 4 / 5 + 7 / 8) / 3)


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    net, seg = network("fbnet_a", decoder="FPN", loss=[{"name": "ce"}, {"name": "dice"}])
    images, masks = torch.randn(4, 3, 64, 64), torch.randint(0, 11, (4, 64, 64))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = seg.loss(net(images)["semantic-segmentation"], {"semantic": masks})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_dnas_search_with_an_smp_decoder_on_digit_scenes(tmp_path):
    from nascore.arch import Arch
    from nascore.cli import main

    spec = {"seed": 0,
            "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 32, "num_val": 8, "num_test": 8,
                        "cache_dir": str(tmp_path / "cache")},
            "tasks": [{"name": "semantic-segmentation", "decoder": "Unet",
                       "decoder_args": {"decoder_channels": [32, 16, 16, 8, 8]}}],
            "space": {"name": "fbnet", "width": 0.25, "input_size": 32},
            "strategy": {"name": "dnas", "epochs": 2, "warmup_epochs": 1, "batch_size": 16},
            "cost": {"name": "flops"}, "pareto": {"samples": 0}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run")]) == 0
    assert Arch.load(tmp_path / "run" / "arch.json").space == "fbnet"
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "val/semantic-segmentation/miou" in last


def write_mask_folder(root, n: int = 6, size: int = 40, bad: str | None = None):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            mask = np.zeros((size, size), np.uint8)
            mask[5:20, 8:30] = 1 + i % 2
            image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            image[mask > 0] += 150
            Image.fromarray(image).save(root / split / "images" / f"im{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"im{i}.png")
    return root


def test_nascore_train_on_a_mask_folder(tmp_path):
    from nascore.cli import main

    root = write_mask_folder(tmp_path / "data")
    spec = {"seed": 0, "dataset": {"name": "mask-folder", "root": str(root), "num_classes": 3, "image_size": 32},
            "tasks": [{"name": "semantic-segmentation", "decoder": "Unet", "loss": [{"name": "ce"}, {"name": "dice"}]}],
            "space": {"name": "fbnet", "input_size": 32}, "strategy": {"name": "dnas"},
            "train": {"epochs": 2, "batch_size": 4, "lr": 0.05}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert main(["train", "fbnet_a", "--spec", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run")]) == 0
    result = json.loads((tmp_path / "run" / "summary.json").read_text())["archs"]["shared"]["train"]
    assert 0 <= result["val/semantic-segmentation/miou"] <= 1


@pytest.mark.parametrize("bad, message", [
    ("no-mask", "1 images of {root}/train/images have no mask in {root}/train/masks, e.g. extra.png"),
    ("no-image", "1 masks of {root}/train/masks have no image in {root}/train/images, e.g. extra.png"),
    ("no-folder", "expected a folder {root}/val/masks"),
])
def test_bad_mask_folders_are_named_at_validate(tmp_path, capsys, bad, message):
    import shutil

    from nascore.cli import main

    root = write_mask_folder(tmp_path / "data", n=2)
    if bad == "no-mask":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "images" / "extra.png")
    elif bad == "no-image":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "train" / "masks" / "extra.png")
    else:
        shutil.rmtree(root / "val" / "masks")
    spec = {"dataset": {"name": "mask-folder", "root": str(root), "num_classes": 3}, "tasks": [
        {"name": "semantic-segmentation"}], "space": {"name": "fbnet"}, "strategy": {"name": "dnas"}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert main(["validate", str(tmp_path / "s.yaml")]) == 2
    assert message.format(root=root) in capsys.readouterr().err


@pytest.mark.parametrize("bad, message", [
    ("size", "is 20x20 but image"),
    ("unreadable", "cannot read mask"),
    ("rgb", "is RGB; expected one class index per pixel"),
    ("class", "holds class 7; expected 0..2"),
])
def test_bad_mask_pairs_are_named_when_read(tmp_path, bad, message):
    from nascore.errors import NascoreError
    from nascore_segmentation import MaskFolder

    root = write_mask_folder(tmp_path / "data", n=2)
    path = root / "train" / "masks" / "im0.png"
    if bad == "size":
        Image.fromarray(np.zeros((20, 20), np.uint8)).save(path)
    elif bad == "unreadable":
        path.write_bytes(b"not a png")
    elif bad == "rgb":
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path)
    else:
        Image.fromarray(np.full((40, 40), 7, np.uint8)).save(path)
    split = MaskFolder({"root": root, "num_classes": 3, "image_size": 32}).split("train")
    with pytest.raises(NascoreError, match=message) as err:
        split[0]
    assert str(path) in str(err.value)

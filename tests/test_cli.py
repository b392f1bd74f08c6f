"""The commands' success paths: info, data export, train."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from nascore.arch import Arch
from nascore.cli import main


def test_info_prints_counts_and_feature_levels(capsys):
    assert main(["info", "fbnet_c"]) == 0
    out = capsys.readouterr().out
    assert "params: 5.571 M" in out and "multiply-adds: 378.1 M" in out
    assert "16@/2, 24@/4, 32@/8, 112@/16, 352@/32" in out and "layer22" in out


def test_info_at_another_size_and_class_count(capsys):
    assert main(["info", "fbnet_a", "--input-size", "112", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "input: 112x112, classes: 10" in out
    macs = float(out.split("multiply-adds: ")[1].split(" M")[0])
    assert 244.5 / 4 < macs < 244.5 / 3  # about a quarter of 224px (odd sizes round up: 7 -> 4 at /32)


def test_data_export_writes_coco_and_masks(tmp_path, capsys):
    out = tmp_path / "export"
    args = ["data", "export", "digit-scenes", str(out), "--set", "num_train=10", "--set", "num_val=3",
            "--set", "num_test=2", "--set", "image_size=32", "--set", f"cache_dir={tmp_path / 'cache'}"]
    assert main(args) == 0
    coco = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert len(coco["images"]) == 10 and coco["annotations"] and len(coco["categories"]) == 10
    assert len(list((out / "val" / "masks").glob("*.png"))) == 3
    assert Image.open(out / "test" / "images" / "000000.png").size == (32, 32)


def _spec(tmp_path: Path, dataset: dict) -> Path:
    spec = {"seed": 0, "dataset": dataset, "tasks": [{"name": "classification"}],
            "space": {"name": "fbnet", "width": 0.25, "input_size": 32},
            "strategy": {"name": "dnas", "epochs": 1, "warmup_epochs": 0},
            "train": {"epochs": 2, "batch_size": 8, "optimizer": "adamw", "lr": 0.003}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_train_a_named_arch_and_resume(tmp_path, capsys):
    spec = _spec(tmp_path, {"name": "digit-scenes", "image_size": 32, "num_train": 24, "num_val": 8,
                            "num_test": 4, "cache_dir": str(tmp_path / "cache")})
    out = tmp_path / "train"
    assert main(["train", "fbnet_a", "--spec", str(spec), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "multiply-adds" in printed and "classification/top1" in printed
    assert Arch.load(out / "arch.json").name == "fbnet_a"
    summary = json.loads((out / "summary.json").read_text())["archs"]["shared"]["train"]
    assert summary["params"] > 1e6 and 0 <= summary["val/classification/top1"] <= 1  # width 1.0: FBNet-A
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    # resuming a finished run redoes nothing and reports the same result
    assert main(["train", "fbnet_a", "--spec", str(spec), "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())["archs"]["shared"]["train"]
    assert again == summary


@pytest.fixture
def image_root(tmp_path) -> Path:
    root = tmp_path / "images"
    for split, n in (("train", 6), ("val", 2)):
        for k, colour in enumerate(((255, 0, 0), (0, 0, 255))):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 40), colour).save(folder / f"{i}.png")
    return root


def test_train_on_an_image_folder(tmp_path, image_root, capsys):
    spec = _spec(tmp_path, {"name": "image-folder", "root": str(image_root), "image_size": 32})
    arch = Arch(space="fbnet", config={"width": 0.25, "input_size": 32},
                choices={f"layer{i:02d}": "k3_e1" for i in range(1, 23)})
    arch.save(tmp_path / "a.json")
    out = tmp_path / "train"
    assert main(["train", str(tmp_path / "a.json"), "--spec", str(spec), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())["archs"]["shared"]["train"]
    assert set(summary) >= {"val/classification/top1", "macs", "params"}

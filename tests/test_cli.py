"""The commands' success paths: --version, info, data export, run (search only), train."""
from __future__ import annotations

import importlib.metadata as md
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from nascore.arch import Arch
from nascore.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == f"nascore {md.version('nascore')}\n"


def test_info_prints_counts_and_feature_levels(capsys):
    assert main(["info", "fbnet_c"]) == 0
    out = capsys.readouterr().out
    assert "input: 224x224 (the arch's space input_size; --input-size N to change)\n" in out
    assert "classes: classification 1000 (the default, as on ImageNet; --num-classes K to change)\n" in out
    assert "params: 5.571 M" in out and "multiply-adds: 378.1 M" in out
    assert "16@/2, 24@/4, 32@/8, 112@/16, 352@/32" in out and "layer22" in out


def test_info_at_another_size_and_class_count(capsys):
    assert main(["info", "fbnet_a", "--input-size", "112", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "input: 112x112 (--input-size)\nclasses: classification 10 (--num-classes)\n" in out
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


def test_search_only_run_summary_info_and_epoch_lines(tmp_path, capsys, monkeypatch):
    """A run without a train block: summary.json holds the found arch's last search validation metrics,
    multiply-adds and params; `nascore info` on its arch.json counts it the same way, from the run's spec; the
    console prints one line per epoch at a pipe's width, numbered as metrics.jsonl."""
    monkeypatch.delenv("COLUMNS", raising=False)  # rich's width off a terminal: 80
    spec = {"seed": 0, "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 32, "num_val": 16,
                                   "num_test": 4, "cache_dir": str(tmp_path / "cache")},
            "tasks": [{"name": "classification"}], "space": {"name": "fbnet", "width": 0.25, "input_size": 32},
            "strategy": {"name": "dnas", "epochs": 2, "warmup_epochs": 0, "batch_size": 16, "max_steps": 1},
            "cost": {"name": "flops"}, "pareto": {"samples": 0}}
    path, out = tmp_path / "spec.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lines = [line for line in printed.err.splitlines() if "] epoch " in line]
    assert [r["epoch"] for r in rows] == [0, 1] and len(lines) == 2 and min(map(len, lines)) > 80
    for line, row in zip(lines, rows):
        assert line.startswith(f"[search] epoch {row['epoch']}: ")
        assert f" val/classification/top1={row['val/classification/top1']:.4g}" in line
    entry = json.loads((out / "summary.json").read_text())["archs"]["shared"]
    search = entry["search"]
    assert "train" not in entry and search["epoch"] == 1 and search["macs"] > 0 and search["params"] > 0
    assert {k: v for k, v in search.items() if k.startswith("val/")} == {
        k: v for k, v in rows[-1].items() if k.startswith("val/")} != {}
    assert (f"[shared after search, epoch 1] multiply-adds: {search['macs'] / 1e6:.2f} M, params: "
            f"{search['params'] / 1e6:.3f} M, validation: classification/top1=") in printed.out
    assert main(["info", str(out / "arch.json")]) == 0
    info = capsys.readouterr().out
    assert f"input: 32x32 (the dataset's image_size in {out / 'spec.yaml'})\n" in info
    assert f"classes: classification 10 (the tasks and dataset digit-scenes in {out / 'spec.yaml'})\n" in info
    assert f"params: {search['params'] / 1e6:.3f} M\nmultiply-adds: {search['macs'] / 1e6:.1f} M\n" in info


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


def test_train_an_arch_found_for_a_task_the_spec_lacks(tmp_path, image_root, capsys):
    """arch_detection.json of an FBNetV5 search trained in a detectron2 spec: for the spec's tasks, with a note."""
    spec = _spec(tmp_path, {"name": "image-folder", "root": str(image_root), "image_size": 32})
    arch = Arch(space="fbnet", config={"width": 0.25, "input_size": 32}, task="detection",
                choices={f"layer{i:02d}": "k3_e1" for i in range(1, 23)})
    arch.save(tmp_path / "arch_detection.json")
    out = tmp_path / "train"
    assert main(["train", str(tmp_path / "arch_detection.json"), "--spec", str(spec), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "found for task 'detection', which the spec does not have" in printed.out + printed.err
    summary = json.loads((out / "summary.json").read_text())["archs"]["shared"]["train"]
    assert "val/classification/top1" in summary


def test_every_command_is_declared_by_its_group_with_a_handler():
    """`nascore --help` lists the commands in the order of the groups; every command (every action of one with
    actions) is run by a handler of the module that declares it."""
    import argparse

    from nascore.cli import GROUPS, _parser

    def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices

    def leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            return [leaf for sub in commands(parser).values() for leaf in leaves(sub)]
        return [parser]

    top = commands(_parser())
    assert list(top) == ["run", "validate", "schema", "plugins", "info", "graph", "train", "lut", "measure", "export",
                         "bench", "predictor", "compare", "report", "data"]
    modules = {group.__name__ for group in GROUPS}
    for name, parser in top.items():
        handlers = [leaf.get_default("handler") for leaf in leaves(parser)]
        assert handlers and all(callable(h) for h in handlers), name
        assert len({h.__module__ for h in handlers}) == 1 and handlers[0].__module__ in modules, name


@pytest.mark.parametrize("argv, patched, hint", [
    (["lut", "build", "examples/latency.yaml"], "nascore.spec.load_spec",
     "run the same command again to resume the table"),
    (["bench", "collect", "s.yaml", "--archs", "2", "--out", "o"], "nascore.spec.load_spec",
     "run the same command again to resume the collection"),
    (["bench", "pseudo-label", "s.yaml", "--archs", "2", "--out", "o"], "nascore.spec.load_spec",
     "run the same command again to resume the collection"),
    (["compare", "s.yaml", "--out", "o"], "nascore.analysis.compare.compare",
     "run the same command again: finished runs are kept, the interrupted one resumes"),
    (["run", "s.yaml"], "nascore.spec.load_spec", "resume with --resume"),
    (["validate", "s.yaml"], "nascore.spec.load_spec", "resume with --resume"),
])
def test_an_interrupted_command_exits_130_with_its_resume_hint(argv, patched, hint, monkeypatch, capsys):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(patched, interrupt)
    assert main(argv) == 130
    assert capsys.readouterr().err == f"interrupted; {hint}\n"


def test_info_counts_are_a_library_call():
    """`nascore info`'s counting takes typed arguments (nascore.counts), no argparse namespace."""
    from nascore.arch import resolve_arch
    from nascore.counts import count_arch

    counts = count_arch(resolve_arch("fbnet_c"), "fbnet_c", input_size=64, num_classes=10)
    assert (counts.input_size, counts.heads, counts.branches) == (64, {"classification": 10}, ())
    assert (round(counts.params / 1e6, 3), round(counts.macs / 1e6, 1)) == (3.606, 30.7)
    assert counts.levels == [(16, 2), (24, 4), (32, 8), (112, 16), (352, 32)] and counts.rows[0] == ("layer01", "k3_e1")

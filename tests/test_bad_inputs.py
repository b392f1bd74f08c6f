"""A corpus of bad inputs (specs, arch files, datasets, checkpoints, run directories, plugins, options).

Each one must give a message naming the field or file and what was expected, exit status 2, no
traceback, and leave nothing behind: the working directory (the current directory of the command, so a
default ``runs/`` would show up too) is compared file by file before and after.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from installed import failed_note, installed, named_archs
from nascore.cli import main
from nascore.registry import Registry, Source
from nascore.spaces.fbnet import FBNetSpace
from nascore.spec import load_spec
from plugin_code import DEPTH_TASK, module_from_code
from workspace import snapshot

FBNET_C = FBNetSpace.named_archs()["fbnet_c"].model_dump(mode="json", exclude_none=True)


def tiny_spec(cache_dir: Path) -> dict:
    """The smallest real search: a few seconds on a CPU."""
    return {"seed": 0,
            "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 40, "num_val": 10, "num_test": 10,
                        "cache_dir": str(cache_dir)},
            "tasks": [{"name": "classification"}],
            "space": {"name": "fbnet", "width": 0.25, "input_size": 32, "head_channels": 64},
            "strategy": {"name": "dnas", "epochs": 1, "warmup_epochs": 0, "batch_size": 16, "max_steps": 1},
            "cost": {"name": "flops"}}


def changed(data: dict, **paths) -> dict:
    """A copy of ``data`` with ``a__b=value`` set (``value=DROP`` removes the key)."""
    data = json.loads(json.dumps(data))
    for path, value in paths.items():
        *parents, last = path.split("__")
        node = data
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is DROP:
            del node[last]
        else:
            node[last] = value
    return data


DROP = object()


def arch(**changes) -> str:
    return json.dumps(changed(FBNET_C, **changes))


@dataclass
class Case:
    argv: list[str]
    expected: str | tuple[str, ...]  # distinctive part(s) of stderr
    #: files to create in the workspace: name -> text, or a callable(workspace, spec dict) -> text
    files: dict[str, str | Callable[[Path, dict], str]] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()


def spec_file(**changes) -> Callable[[Path, dict], str]:
    return lambda ws, base: yaml.safe_dump(changed(base, **changes), sort_keys=False)


VALID = spec_file()
COCO_SPEC = {"name": "coco", "train_json": "a.json", "train_images": "imgs", "val_json": "a.json",
             "val_images": "imgs"}

CASES: dict[str, Case] = {
    # -- spec files -------------------------------------------------------------------------------------
    "spec-missing": Case(["validate", "nope.yaml"], "error: spec file nope.yaml does not exist"),
    "spec-not-yaml": Case(["validate", "s.yaml"], "error: spec file s.yaml is not valid YAML: line 3, column 1: "
                                                  "expected ',' or ']', but got '<stream end>'",
                          {"s.yaml": "seed: 0\ntasks: [{name: classification}\n"}),
    "spec-is-a-directory": Case(["validate", "specs"], "error: spec file specs is a directory; expected a file",
                                dirs=("specs",)),
    "spec-is-a-list": Case(["validate", "s.yaml"], "error: spec file s.yaml must hold a mapping of keys (seed, "
                                                   "dataset, tasks, space, strategy, ...), not a list",
                           {"s.yaml": "- dataset\n- tasks\n"}),
    "spec-empty": Case(["validate", "s.yaml"], "error: spec file s.yaml is empty; expected a mapping", {"s.yaml": ""}),
    "spec-unknown-top-level-key": Case(
        ["validate", "s.yaml"], "  strategyy: unknown field; expected one of: seed, device, dataset, tasks, space, "
                                "strategy, cost, train, pareto, timm_models, log, distributed, amp, "
                                "channels_last. Did you mean 'strategy'?",
        {"s.yaml": lambda ws, base: yaml.safe_dump({**base, "strategyy": base["strategy"]})}),
    "spec-missing-tasks": Case(["validate", "s.yaml"], "error: s.yaml is not a valid spec:\n  tasks: Field required",
                               {"s.yaml": spec_file(tasks=DROP)}),
    "spec-tasks-empty": Case(["validate", "s.yaml"], "  tasks: List should have at least 1 item after validation",
                             {"s.yaml": spec_file(tasks=[])}),
    "spec-block-not-a-mapping": Case(["validate", "s.yaml"], "  space: expected a mapping of fields, got str 'fbnet'",
                                     {"s.yaml": spec_file(space="fbnet")}),
    "spec-unknown-space": Case(["validate", "s.yaml"], f"  space.name: unknown space 'fbnett'; available: "
                                                       f"{installed('space')}. Did you mean 'fbnet'?",
                               {"s.yaml": spec_file(space__name="fbnett")}),
    "spec-unknown-task": Case(["validate", "s.yaml"], "  tasks[0].name: unknown task 'clasification'; available: "
                                                      f"{installed('task')}. Did you mean 'classification'?",
                              {"s.yaml": spec_file(tasks__0__name="clasification")}),
    "spec-bad-type": Case(["validate", "s.yaml"], "  strategy.epochs: Input should be a valid integer, unable to "
                                                  "parse string as an integer",
                          {"s.yaml": spec_file(strategy__epochs="many")}),
    "spec-out-of-range": Case(["validate", "s.yaml"], "  strategy.temperature.initial: Input should be greater than 0",
                              {"s.yaml": spec_file(strategy__temperature={"initial": 0})}),
    "spec-typo-in-block": Case(["validate", "s.yaml"], "  space.widht: unknown field; expected one of: width, "
                                                       "input_size, head_channels, divisor, stages, stem_channels, "
                                                       "activation, shared_weights, candidates, skip_in. Did you "
                                                       "mean 'width'?",
                               {"s.yaml": spec_file(space__widht=0.5)}),
    "spec-nested-typo": Case(["validate", "s.yaml"], "  strategy.temperature.inital: unknown field; expected one "
                                                     "of: initial, final, decay. Did you mean 'initial'?",
                             {"s.yaml": spec_file(strategy__temperature={"inital": 2})}),
    "spec-unknown-loss-form": Case(["validate", "s.yaml"], "  cost.loss: Input tag 'hinge' found using 'form' does "
                                                           "not match any of the expected tags: 'multiplicative', "
                                                           "'additive'",
                                   {"s.yaml": spec_file(cost__loss={"form": "hinge"})}),
    "spec-pareto-out-of-range": Case(["validate", "s.yaml"], "  pareto.samples: Input should be greater than or "
                                                             "equal to 0",
                                     {"s.yaml": spec_file(pareto={"samples": -2})}),
    "spec-pareto-typo-on-run": Case(["run", "s.yaml", "--out", "out"], "  pareto.bn_batch: unknown field; expected "
                                                                       "one of: samples, bn_batches, batch_size. "
                                                                       "Did you mean 'bn_batches'?",
                                    {"s.yaml": spec_file(pareto={"bn_batch": 2})}),
    "spec-bad-device": Case(["run", "s.yaml", "--out", "out"], "  device: 'gpu:zero' is not a torch device; expected "
                                                               "e.g. cpu, cuda, cuda:1, mps",
                            {"s.yaml": spec_file(device="gpu:zero")}),
    # -- datasets -------------------------------------------------------------------------------------------
    "dataset-root-missing": Case(["validate", "s.yaml"], "  dataset.root: expected a folder images/train with one "
                                                         "sub-folder per class",
                                 {"s.yaml": spec_file(dataset={"name": "image-folder", "root": "images"})}),
    "dataset-no-class-folders": Case(["validate", "s.yaml"], "  dataset.root: images/val has no class sub-folders",
                                     {"s.yaml": spec_file(dataset={"name": "image-folder", "root": "images"})},
                                     dirs=("images/train/cat", "images/val")),
    "dataset-coco-json-missing": Case(["validate", "s.yaml"], "  dataset: COCO annotations a.json does not exist",
                                      {"s.yaml": spec_file(dataset=COCO_SPEC)}, dirs=("imgs",)),
    "dataset-coco-not-coco": Case(["validate", "s.yaml"], "  dataset: a.json is not COCO detection JSON: missing "
                                                          "annotations, categories",
                                  {"s.yaml": spec_file(dataset=COCO_SPEC), "a.json": '{"images": []}'},
                                  dirs=("imgs",)),
    "dataset-coco-image-missing": Case(["validate", "s.yaml"], "  dataset: train_json: 1 images of a.json are not "
                                                               "in imgs, e.g. 0.png",
                                       {"s.yaml": spec_file(dataset=COCO_SPEC), "a.json": json.dumps(
                                           {"images": [{"id": 1, "file_name": "0.png", "width": 8, "height": 8}],
                                            "annotations": [], "categories": [{"id": 1, "name": "x"}]})},
                                       dirs=("imgs",)),
    "dataset-bad-option-on-run": Case(["run", "s.yaml", "--out", "out"],
                                      "  dataset.image_size: Input should be greater than or equal to 16",
                                      {"s.yaml": spec_file(dataset__image_size=8)}),
    "data-export-unknown-dataset": Case(["data", "export", "digit-scene", "export"],
                                        f"error: unknown dataset 'digit-scene'; available: {installed('dataset')}. "
                                        "Did you mean 'digit-scenes'?"),
    "data-export-bad-option": Case(["data", "export", "digit-scenes", "export", "--set", "image_size=8"],
                                   "error: options of dataset 'digit-scenes' (--set) are not valid:\n"
                                   "  image_size: Input should be greater than or equal to 16"),
    "data-export-typo-option": Case(["data", "export", "digit-scenes", "export", "--set", "imagesize=64"],
                                    ("  imagesize: unknown field; expected one of: image_size, num_train, ",
                                     ". Did you mean 'image_size'?")),
    # -- arch files and named archs -----------------------------------------------------------------------
    "arch-missing": Case(["info", "a.json"], "error: arch file a.json does not exist"),
    "arch-not-json": Case(["info", "a.json"], "error: arch file a.json is not valid JSON: ",
                          {"a.json": "{space: fbnet"}),
    "arch-not-an-object": Case(["info", "a.json"], "error: arch file a.json is not a valid arch:\n  <root>: expected a "
                                                   "mapping of fields, got list [1, 2]", {"a.json": "[1, 2]"}),
    "arch-missing-choices": Case(["info", "a.json"], "error: arch file a.json is not a valid arch:\n  choices: "
                                                     "Field required", {"a.json": arch(choices=DROP)}),
    "arch-typo-key": Case(["info", "a.json"], "  choice: unknown field; expected one of: space, config, choices, task, "
                                              "name. Did you mean 'choices'?",
                          {"a.json": lambda ws, base: json.dumps({**FBNET_C, "choice": {}})}),
    "arch-unknown-decision": Case(["info", "a.json"], "error: arch file a.json: choices.layer99: not a decision of "
                                                      "space 'fbnet'", {"a.json": arch(choices__layer99="skip")}),
    "arch-missing-decision": Case(["info", "a.json"],
                                  "error: arch file a.json: choices.layer05: missing (options: ",
                                  {"a.json": arch(choices__layer05=DROP)}),
    "arch-invalid-option": Case(["info", "a.json"],
                                "error: arch file a.json: choices.layer03: 'k7_e9' is not one of "
                                "k3_e1, k3_e1_g2, k3_e3, k3_e6, k5_e1, k5_e1_g2, k5_e3, k5_e6, skip",
                                {"a.json": arch(choices__layer03="k7_e9")}),
    "arch-unknown-space": Case(["info", "a.json"], "error: arch file a.json: space: unknown space 'fbnett'; available: "
                                                   f"{installed('space')}. Did you mean 'fbnet'?",
                               {"a.json": arch(space="fbnett")}),
    "arch-bad-space-config": Case(["info", "a.json"], "  config.width: Input should be less than or equal to 4",
                                  {"a.json": arch(config={"width": 5})}),
    "named-arch-unknown": Case(["info", "fbnet_cc"], "error: 'fbnet_cc' is neither an arch file nor a named arch; "
                                                     f"available: {named_archs()}. Did you mean 'fbnet_c'?"),
    "info-num-classes": Case(["info", "fbnet_a", "--num-classes", "1"], "error: --num-classes must be at least 2"),
    # -- command-line options -----------------------------------------------------------------------------
    "set-without-equals": Case(["run", "s.yaml", "--out", "out", "--set", "strategy.epochs"],
                               "error: --set 'strategy.epochs': expected KEY=VALUE, e.g. strategy.epochs=3",
                               {"s.yaml": VALID}),
    "set-index-out-of-range": Case(["run", "s.yaml", "--out", "out", "--set", "tasks.5.x=1"],
                                   "error: --set 'tasks.5.x=1': 'tasks' is a list of 1; '5' is not an index in it",
                                   {"s.yaml": VALID}),
    "set-bad-value-on-run": Case(["run", "s.yaml", "--out", "out", "--set", "strategy.batch_size=0"],
                                 "  strategy.batch_size: Input should be greater than or equal to 1",
                                 {"s.yaml": VALID}),
    "set-bad-value-without-out": Case(["run", "s.yaml", "--set", "space.width=[1"],  # default runs/<name>-<time>
                                      "error: --set 'space.width=[1': value is not valid YAML: line 1, column 3: ",
                                      {"s.yaml": VALID}),
    # -- run directories ----------------------------------------------------------------------------------
    "resume-empty-dir": Case(["run", "s.yaml", "--out", "out", "--resume"],
                             "error: --resume: out holds no run (spec.yaml is missing)", {"s.yaml": VALID},
                             dirs=("out",)),
    "resume-missing-dir": Case(["run", "s.yaml", "--out", "out", "--resume"],
                               "error: --resume: out holds no run (spec.yaml is missing)", {"s.yaml": VALID}),
    "resume-without-out": Case(["run", "s.yaml", "--resume"], "error: --resume needs --out DIR", {"s.yaml": VALID}),
    "out-not-empty": Case(["run", "s.yaml", "--out", "out"], "error: output directory out is not empty; pass --resume "
                                                             "to continue that run or choose another --out",
                          {"s.yaml": VALID, "out/notes.txt": "my notes\n"}),
    "out-is-a-file": Case(["run", "s.yaml", "--out", "out"], "error: [Errno 20] Not a directory: 'out'",
                          {"s.yaml": VALID, "out": "not a directory\n"}),
}


def materialise(case: Case, ws: Path, base: dict) -> None:
    for d in case.dirs:
        (ws / d).mkdir(parents=True)
    for name, content in case.files.items():
        path = ws / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content(ws, base) if callable(content) else content)


def check_rejected(code: int, out: str, err: str, expected: str | tuple[str, ...]) -> None:
    assert code == 2, (code, out, err)
    for part in (expected,) if isinstance(expected, str) else expected:
        assert part in err, err
    assert any(line.startswith("error: ") for line in err.splitlines()), err
    assert "Traceback" not in err and "Traceback" not in out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, ws, cache_dir, capsys):
    case = CASES[name]
    materialise(case, ws, tiny_spec(cache_dir))
    before = snapshot(ws)
    code = main(case.argv)
    out, err = capsys.readouterr()
    check_rejected(code, out, err, case.expected)
    assert snapshot(ws) == before  # nothing written, nothing changed (no out/, runs/ or export/ either)


def test_corpus_is_large_enough():
    assert len(CASES) >= 15


# -- the real command ---------------------------------------------------------------------------------------
def test_real_command(ws, cache_dir):
    """The installed ``nascore`` console script itself: exit status 2, the message on stderr, no traceback,
    the existing run directory untouched (one process: each costs seconds of torch import)."""
    case = CASES["out-not-empty"]
    materialise(case, ws, tiny_spec(cache_dir))
    before = snapshot(ws)
    script = Path(sys.executable).with_name("nascore")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "nascore.cli"]
    proc = subprocess.run([*command, *case.argv], capture_output=True, text=True,
                          cwd=ws, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    check_rejected(proc.returncode, proc.stdout, proc.stderr, case.expected)
    assert snapshot(ws) == before


# -- checkpoints and resuming ---------------------------------------------------------------------------
@pytest.fixture
def run_dir(ws, cache_dir) -> tuple[Path, Path]:
    """A run directory as ``nascore run`` starts it (resolved spec written), and its spec file."""
    from nascore.progress import Reporter
    from nascore.rundir import open_run

    spec_path = ws / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec(cache_dir), sort_keys=False))
    open_run(load_spec(spec_path), ws / "out", resume=False, reporter=Reporter(quiet=True))
    assert (ws / "out" / "spec.yaml").is_file()
    return spec_path, ws / "out"


def _resume(spec_path: Path, out: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = main(["run", str(spec_path.name), "--out", str(out.name), "--resume", *extra])
    o, e = capsys.readouterr()
    return code, o, e


@pytest.mark.parametrize("content, expected", [
    (b"this is not a checkpoint", "error: checkpoint out/checkpoints/search.pt is not a PyTorch checkpoint (zip "
                                  "archive expected)\n"),
    ("list", "error: checkpoint out/checkpoints/search.pt holds a list, expected a dict"),
], ids=["garbage", "not-a-dict"])
def test_corrupt_checkpoint_on_resume(run_dir, capsys, content, expected):
    spec_path, out = run_dir
    ckpt = out / "checkpoints" / "search.pt"
    ckpt.parent.mkdir()
    if content == "list":
        torch.save([1, 2, 3], ckpt)
    else:
        ckpt.write_bytes(content)
    before = snapshot(spec_path.parent)
    code, o, e = _resume(spec_path, out, capsys)
    check_rejected(code, o, e, expected)
    assert "weights_only" not in e  # torch's advice to load the file unsafely is not repeated
    assert snapshot(spec_path.parent) == before  # the checkpoint is kept as it was; no metrics, no arch


def test_resume_with_another_spec(run_dir, capsys):
    spec_path, out = run_dir
    before = snapshot(spec_path.parent)
    code, o, e = _resume(spec_path, out, capsys, "--set", "strategy.epochs=2")
    check_rejected(code, o, e, "error: --resume: the spec differs from the one the run in out started with "
                               "(out/spec.yaml): strategy.epochs: 1, now 2; resume with the same spec and --set "
                               "options, or run the changed spec in another --out")
    assert snapshot(spec_path.parent) == before


# -- cross-block checks and plugins (a registry with an extra plugin registered in-process) ---------------
def _registry_with(code: str, source: Source) -> Registry:
    module = module_from_code(source.entry_point.split(" = ")[-1], code)
    registry = Registry.from_entry_points()
    registry.register(module, source)
    registry.collect()
    return registry


SECOND_DNAS = '''
    from typing import ClassVar

    from nascore import hookimpl
    from nascore.strategies.dnas import DNAS

    class MyDNAS(DNAS):
        name: ClassVar[str] = "dnas"

    @hookimpl
    def nascore_search_strategies():
        return [MyDNAS]
'''

BROKEN = '''
    from nascore import hookimpl

    @hookimpl
    def nascore_search_strategies():
        raise RuntimeError("needs a GPU")
'''


@pytest.mark.parametrize("plugin, source, changes, expected", [
    (DEPTH_TASK, Source("nascore-depth", "depth = nascore_depth"), {"tasks": [{"name": "depth"}]},
     "  tasks[0].name: task 'depth' needs 'depth' targets, which dataset 'digit-scenes' does not have (it has: "
     "classes, edges, label, saliency, semantic)"),
    (SECOND_DNAS, Source("nascore-mydnas", "mydnas = nascore_mydnas"), {},
     "  strategy.name: strategy 'dnas' is provided by several plugins (distribution 'nascore', entry point 'dnas = "
     "nascore.strategies.dnas'; distribution 'nascore-mydnas', entry point 'mydnas = nascore_mydnas'); uninstall one"),
    (BROKEN, Source("nascore-gpu-only", "gpu = nascore_gpu_only"), {"strategy": {"name": "proxyless"}},
     f"  strategy.name: unknown strategy 'proxyless'; available: {installed('strategy')}{failed_note(extra=1)}"),
], ids=["task-target-not-in-dataset", "name-claimed-twice", "component-of-a-broken-plugin"])
def test_spec_against_plugins(plugin, source, changes, expected, ws, cache_dir, capsys, monkeypatch):
    registry = _registry_with(plugin, source)
    monkeypatch.setattr("nascore.spec.get_registry", lambda: registry)
    (ws / "s.yaml").write_text(yaml.safe_dump({**tiny_spec(cache_dir), **changes}))
    before = snapshot(ws)
    code = main(["run", "s.yaml", "--out", "out"])
    out, err = capsys.readouterr()
    check_rejected(code, out, err, expected)
    assert snapshot(ws) == before


# -- nascore train
def test_train_checks_the_arch_before_writing(ws, cache_dir, capsys):
    (ws / "s.yaml").write_text(yaml.safe_dump(tiny_spec(cache_dir)))
    (ws / "a.json").write_text(arch(choices__layer03="k7_e9"))
    before = snapshot(ws)
    code = main(["train", "a.json", "--spec", "s.yaml", "--out", "out"])
    out, err = capsys.readouterr()
    check_rejected(code, out, err, "error: arch file a.json: choices.layer03: 'k7_e9' is not one of")
    assert snapshot(ws) == before

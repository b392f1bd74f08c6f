"""Every script in benchmarks/ runs end to end in its smoke mode (tiny sizes, seconds), so that a refactor that
breaks one fails here. BENCHMARKS.md's numbers come from the full runs, never from these."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
COLLECTIONS = ("fbnet", "fbnet_12ep", "fbnetv2_12ep")  # benchmarks/perfdata/<name>.tar.gz
#: ``nascore --set`` overrides that shrink a digit-scenes spec to a few images
FEW_IMAGES = ("dataset.num_train=16", "dataset.num_val=8")


@dataclass(frozen=True)
class Smoke:
    """A script's smoke run. In ``args`` and ``before``, ``{tmp}`` is the test's folder and ``{perf}`` the folder of
    the shipped collections, extracted."""

    args: tuple[str, ...]
    #: files under ``{tmp}`` the run must write (JSON ones must parse to something non-empty)
    files: tuple[str, ...] = ()
    #: a pattern (regex) of a line the run must print
    line: str | None = None
    #: ``nascore`` commands that make the script's input first
    before: tuple[tuple[str, ...], ...] = ()
    #: modules the script cannot run without (not installed: skipped, with the reason)
    needs: tuple[str, ...] = ()


def sets(*overrides: str, flag: str = "--set") -> tuple[str, ...]:
    """``flag`` before each of ``overrides``."""
    return tuple(a for o in overrides for a in (flag, o))


#: benchmarks/<script> -> its smoke run
SMOKES: dict[str, Smoke] = {
    "aiop_predictor.py": Smoke(
        ("{perf}/fbnet_12ep", "{perf}/fbnetv2_12ep", "--splits", "1", "--set", "epochs=1", "--noise", "1",
         *sets("train.epochs=1", *FEW_IMAGES, flag="--noise-set"), "--noise-out", "{tmp}/noise", "--workers", "1",
         "--json", "{tmp}/aiop_predictor.json"),
        files=("aiop_predictor.json",),
        # one retrained arch: a Spearman of None, printed as n/a
        line=r"label noise, classification: Spearman between training seeds n/a, Kendall n/a"),
    "aiop_pseudolabels.py": Smoke(
        ("benchmarks/perfdata/fbnet_12ep.yaml", "{perf}/fbnet_12ep", "--first", "3", "--out", "{tmp}/pl",
         "--supernet-epochs", "1", "--head-epochs", "1", "--finetune-steps", "1", "--rule", "fair",
         *sets(*FEW_IMAGES), "--json", "{tmp}/aiop_pseudolabels.json"),
        files=("aiop_pseudolabels.json",), line=r"^\| body sampling \| 3 \|"),
    "aiop_transfer.py": Smoke(
        ("{perf}/fbnet_12ep", "{perf}/fbnetv2_12ep", "--adapter-data", "{perf}/fbnet", "--adapter-task", "saliency",
         "--seeds", "1", "--labels", "5", "--base-set", "epochs=1", *sets("fine_tune_epochs=1", "adapter_epochs=1"),
         "--scratch", "epochs=1", "--json", "{tmp}/aiop_transfer.json"),
        files=("aiop_transfer.json",), line=r"^\| fbnetv2 -> fbnet .* \| aio-p transfer, heads\+adapters, K=1 \|"),
    "bmtas_random.py": Smoke(
        ("--threads", "1", "--seeds", "0", "--random", "1", "--tolerance", "1", "--out", "{tmp}/tree",
         "--retrain-seed", "5",
         *sets("dataset.num_train=10", "dataset.num_val=4", "strategy.epochs=2", "strategy.batch_size=4",
               "train.epochs=1", "train.batch_size=4")),
        files=("tree/search_seed0/summary.json", "tree/train_seed0_random1/summary.json",
               "tree/retrain5_seed0_found/summary.json", "tree/retrain5_seed0_random1/summary.json"),
        line=r"^saliency/max_f: training-seed sd of one label \d\.\d{3} \(2 trees\)"),
    "bmtas_sweep.py": Smoke(
        ("--threads", "1", "--lambdas", "0", "1", "--out", "{tmp}/sweep",
         *sets("dataset.image_size=32", "space.input_size=32", "dataset.num_train=10", "dataset.num_val=4",
               "strategy.epochs=2", "strategy.batch_size=4", "train.epochs=1", "train.batch_size=4")),
        files=("sweep/sweep.json", "sweep/sweep.png"), line=r"^\| BMTAS λ=1 \|"),
    "ddp_epoch.py": Smoke(
        ("--configs", "2x1", "--no-warmup", "--width", "0.25", "--train", "20", "--batch", "4"),
        line=r"^\| 2 procs x 1 thread \| \d+\.\d+ \|"),
    "detectron2_backbones.py": Smoke(
        ("--searched", "fbnet_a", "--iters", "2", "--batch", "2", "--size", "64", "--num-train", "8", "--num-val", "4",
         "--threads", "1", "--data", "{tmp}/coco"),
        line=r"^\| timm mobilenetv3_large_100 .*\| \d+\.\d \|", needs=("detectron2", "nascore_detectron2")),
    "dnas_overhead.py": Smoke(
        ("--batch", "2", "--head-channels", "32", "--threads", "1", "--repeats", "2", "--warmup", "1",
         "--block-seconds", "0.01"),
        line=r"single path: nascore / standalone child .* (PASS|MISS)$"),
    "export.py": Smoke(
        ("--out", "{tmp}/export", "--only", "fbnet_a", "--epochs", "1", *sets(*FEW_IMAGES), "--int8-recipe", "all"),
        files=("export/export.json",), line=r"^\| fbnet_a \| 32 \|"),
    "fbnetv2_masking.py": Smoke(("--smoke",), line=r"^whole supernet, resolution options per block"),
    "gpu_paths.py": Smoke(
        ("--device", "cpu", "--smoke", "--only", "precision", "syncbn", "torchrun", "export", "latency", "--out",
         "{tmp}/gpu_paths.json"),
        files=("gpu_paths.json",), line=r"^\[latency\] ok in"),
    "fbnetv5_quality.py": Smoke(
        ("--out", "{tmp}/v5", "--seeds", "0", "--random", "1", "--tolerance", "1",
         *sets("dataset.num_train=10", "dataset.num_val=4", "strategy.epochs=1", "strategy.warmup_epochs=0",
               "strategy.batch_size=4", "train.epochs=1", "train.batch_size=4")),
        files=("v5/search3_seed0/summary.json",), line=r"^\| all \| \d\.\d{3} \+- "),
    "fbnetv5_step.py": Smoke(
        ("--threads", "1", "--rounds", "1", "--steps", "1", "--warmup", "0",
         *sets("dataset.image_size=32", "space.input_size=32", "dataset.num_train=10", "dataset.num_val=4",
               "strategy.batch_size=2")),
        line=r"^3 tasks one pass / slowest 1-task step"),
    "label_noise.py": Smoke(
        ("{perf}/fbnet_12ep", "--archs", "2", "--workers", "1", "--out", "{tmp}/noise",
         "--budget", "train.epochs=1 " + " ".join(FEW_IMAGES)),
        line=r"^\| train\.epochs=1 .* \| classification \| (n/a|-?\d\.\d{3}) \|"),
    "label_fit.py": Smoke(
        ("{perf}/fbnet_12ep", "--archs", "3", "--out", "{tmp}/fit", *sets(*FEW_IMAGES, "train.epochs=1")),
        line=r"^\| last epoch's training loss \| (n/a|-?\d\.\d{3}) \|"),
    "latency_fidelity.py": Smoke(
        ("--widths", "0.25", "--sizes", "32", "--archs", "3", "--op-time", "0.001", "--model-time", "0.001",
         "--rounds", "2", "--calibrate", "2", "--dir", "{tmp}/luts", "--json", "{tmp}/latency_fidelity.json"),
        files=("latency_fidelity.json",), line=r"^\| onnxruntime \| 0\.25 \| 32 \|"),
    "option_effects.py": Smoke(
        ("{tmp}/data", "--scores", "{tmp}/rank", "--labels", "{tmp}/data", "--option", "skip", "--least", "1",
         "--json", "{tmp}/effects.json"),
        before=(("bench", "collect", "benchmarks/perfdata/fbnet_12ep.yaml", "--archs", "4", "--out", "{tmp}/data",
                 "--workers", "1", *sets(*FEW_IMAGES, "train.epochs=1", "train.batch_size=8")),
                ("bench", "supernet-rank", "benchmarks/perfdata/fbnet_12ep.yaml", "{tmp}/data", "--epochs", "1",
                 "--out", "{tmp}/rank", *sets(*FEW_IMAGES, "train.epochs=1", "train.batch_size=8"))),
        files=("effects.json",), line=r"^\| supernet rank \| (n/a|-?\d\.\d{3}) \("),
    "ray_collect.py": Smoke(
        ("--out", "{tmp}/ray", "--archs", "2", "--modes", "ray", *sets(*FEW_IMAGES, "train.epochs=1")),
        files=("ray/ray/dataset.json",), line=r"^\| ray \| \d+\.\d \|", needs=("ray",)),
    "search_vs_random.py": Smoke(
        ("{tmp}/cmp", "--collection", "{perf}/fbnet_12ep", "--retrained", "{tmp}/again", "--k", "3", "--json",
         "{tmp}/search_vs_random.json"),
        before=(("compare", "benchmarks/search/random.yaml", "--seeds", "1", "--out", "{tmp}/cmp",
                 *sets(*FEW_IMAGES, "strategy.archs=2", "strategy.train.epochs=1", "train.epochs=1")),
                ("train", "{tmp}/cmp/random/seed0/arch.json", "--spec", "benchmarks/search/random.yaml", "--out",
                 "{tmp}/again", *sets(*FEW_IMAGES, "train.epochs=1", "seed=10"))),
        files=("search_vs_random.json",), line=r"^\| random \| .* \| k=3: "),
    "smp_encoders.py": Smoke(
        ("--searched", "fbnet_a", "--epochs", "1", "--batch", "4", "--size", "32", "--num-train", "10", "--num-val",
         "4", "--threads", "1"),
        line=r"^\| timm mobilenetv3_large_100 .*\| \d\.\d{3} \|", needs=("segmentation_models_pytorch",)),
    "supernet_budgets.py": Smoke(
        ("benchmarks/search/oneshot_dmasking.yaml", "benchmarks/search/random_dmasking.yaml", "--budgets", "6.0e5",
         "--seeds", "1", "--out", "{tmp}/budgets", "--json", "{tmp}/budgets.json",
         *sets(*FEW_IMAGES, "train.epochs=1", "train.batch_size=8"),
         *sets("strategy.supernet.epochs=1", "strategy.supernet.batch_size=8", "strategy.population=2",
               "strategy.sample_size=2", "strategy.cycles=2", "strategy.top_k=1", "strategy.train.epochs=1",
               "strategy.train.batch_size=8", "strategy.bn_batches=1", flag="--search-set"),
         *sets("strategy.archs=1", "strategy.train.epochs=1", "strategy.train.batch_size=8", flag="--random-set")),
        files=("budgets.json", "budgets/reuse/600000/seed0/summary.json", "budgets/retrain/found/600000/seed0/summary.json"),
        line=r"^\| 0\.60 \| \d\.\d{3} \(.*\| \d+ \|$"),
    "supernet_cost.py": Smoke(
        ("benchmarks/perfdata/fbnet_12ep.yaml", "{perf}/fbnet_12ep", "--archs", "1", "--epochs", "1",
         *sets(*FEW_IMAGES, "train.epochs=1"), "--json", "{tmp}/cost.json"),
        files=("cost.json",), line=r"^\| uniform \| 1 \| [\d.]+ \| [\d.]+ \| 1 \|"),
    "supernet_training.py": Smoke(  # more of it in tests/test_supernet_rank.py
        ("--epochs", "1", "--seeds", "0", "--only", "fixed", *sets(*FEW_IMAGES), "--json", "{tmp}/rows.json"),
        files=("rows.json",), line=r"^\| fixed \| "),
}
#: modules the scripts import, run through them
HELPERS = {"resumable.py": ("bmtas_random.py", "bmtas_sweep.py", "fbnetv5_quality.py", "supernet_budgets.py")}


def test_every_benchmark_has_a_smoke_run():
    """A new script in benchmarks/ fails here until it is given a smoke run above."""
    found = {p.name for p in BENCHMARKS.glob("*.py")}
    assert found - set(SMOKES) - set(HELPERS) == set(), "benchmarks without a smoke run in tests/test_benchmarks.py"
    assert set(SMOKES) | set(HELPERS) <= found, "smoke runs of benchmarks that are gone"
    for helper, users in HELPERS.items():
        assert all(f"from {helper[:-3]} import" in (BENCHMARKS / user).read_text() for user in users)


@pytest.fixture(scope="module")
def perf(tmp_path_factory) -> Path:
    """The shipped performance collections, extracted."""
    folder = tmp_path_factory.mktemp("perf")
    for name in COLLECTIONS:
        with tarfile.open(BENCHMARKS / "perfdata" / f"{name}.tar.gz") as tar:
            tar.extractall(folder, filter="data")
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """One thread per process (the scripts are small, the machine is shared) and one digit-scenes cache for the
    module's runs."""
    return {**os.environ, "NASCORE_CACHE": str(tmp_path_factory.mktemp("cache")), "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.parametrize("script", list(SMOKES))
def test_the_benchmark_runs_in_its_smoke_mode(script, tmp_path, perf, env):
    smoke = SMOKES[script]
    for module in smoke.needs:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"benchmarks/{script} needs {module}, which is not installed")
    fill = {"tmp": tmp_path, "perf": perf}
    for command in smoke.before:
        run([sys.executable, "-m", "nascore.cli", *(a.format(**fill) for a in command)], env)
    out = run([sys.executable, str(BENCHMARKS / script), *(a.format(**fill) for a in smoke.args)], env)
    for name in smoke.files:
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size, f"{script} did not write {name}"
        if path.suffix == ".json":
            assert json.loads(path.read_text()), f"{name} is empty"
    if smoke.line:
        assert re.search(smoke.line, out, re.MULTILINE), f"{script} printed no line like {smoke.line!r}:\n{out}"

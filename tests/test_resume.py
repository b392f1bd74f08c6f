"""Kill and resume, end to end: a ``nascore run`` subprocess of each search strategy is killed with SIGKILL at a
chosen point (before its first epoch, inside an epoch of the search or of the training, after the search) and
continued with ``--resume``; it must end with the same arch files, metrics rows (exactly equal floats), Pareto
table and summary as an uninterrupted run with the same seed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tiny import FLOPS, ONE_SHOT_SPACE, SPACE, dnas_spec, predictor_file, standalone_spec

pytestmark = pytest.mark.slow

# one intra-op thread: the same arithmetic in the uninterrupted and the resumed runs (and fast on a busy CPU)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
DEADLINE_S = 300


def reinforce_spec(cache: Path) -> dict:
    """Two tasks (so importance weights matter), a cost in the reward; epoch 0 warms up, 1 and 2 learn the
    policies (moving-average baselines, Adam moments, the sampling generator carry over between them)."""
    return {"seed": 0,
            "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 48, "num_val": 16, "num_test": 8,
                        "cache_dir": str(cache)},
            "tasks": [{"name": "classification"}, {"name": "segmentation", "channels": 8}],
            "space": SPACE,
            "strategy": {"name": "reinforce", "epochs": 3, "warmup_epochs": 1, "batch_size": 16, "max_steps": 3,
                         "bn_batches": 1, "policy": {"lr": 0.05, "entropy": 0.001}},
            "cost": FLOPS, "pareto": {"samples": 2, "bn_batches": 1}}


def bmtas_spec(cache: Path) -> dict:
    """Epochs 0-2 warm up (the weights' Adam moments carry over between them), 3 and 4 search."""
    return {"seed": 0,
            "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 48, "num_val": 16, "num_test": 8,
                        "cache_dir": str(cache)},
            "tasks": [{"name": "segmentation", "channels": 8}, {"name": "classification"}],
            "space": {"name": "branched", "backbone": "fbnet_a", "input_size": 32},
            "strategy": {"name": "bmtas", "epochs": 5, "warmup_epochs": 3, "batch_size": 16, "max_steps": 2,
                         "bn_batches": 1, "arch": {"lr": 0.1}},
            "cost": {"name": "flops", "loss": {"form": "additive", "lambda": 0.05, "scale": 1.0e7}},
            "pareto": {"samples": 2, "bn_batches": 1}}


def random_spec(cache: Path) -> dict:
    """Three archs, one per epoch."""
    return standalone_spec(cache, {"name": "random", "archs": 3})


def predictor_spec(cache: Path) -> dict:
    """Epoch 0 evolves (scored by a predictor file), epochs 1-3 train the three archs predicted best."""
    strategy = {"name": "predictor", "file": str(predictor_file(cache.parent)), "population": 8, "cycles": 16,
                "sample_size": 3, "top_k": 3}
    return standalone_spec(cache, strategy)


def oneshot_spec(cache: Path) -> dict:
    """Epochs 0-1 train the shared-weights supernet one-shot, epoch 2 evolves (archs scored on it), epochs 3-4 train
    the two archs scored best."""
    spec = standalone_spec(cache, {"name": "oneshot", "supernet": {"epochs": 2, "batch_size": 16, "lr": 0.05},
                                   "population": 6, "cycles": 6, "sample_size": 3, "top_k": 2, "bn_batches": 2})
    spec["space"] = {**spec["space"], **ONE_SHOT_SPACE}
    return spec


def amp_spec(cache: Path) -> dict:
    """DNAS with fp16 autocast (the GradScaler's scale carries over) and channels_last."""
    return {**dnas_spec(cache), "amp": {"dtype": "fp16"}, "channels_last": True}


def bf16_spec(cache: Path) -> dict:
    """DNAS with bf16 autocast (no loss scale: what torchrun jobs use) and channels_last."""
    return {**dnas_spec(cache), "amp": {"dtype": "bf16"}, "channels_last": True}


SPECS = {"dnas": dnas_spec, "reinforce": reinforce_spec, "bmtas": bmtas_spec, "random": random_spec,
         "predictor": predictor_spec, "oneshot": oneshot_spec, "dnas-amp": amp_spec, "dnas-bf16": bf16_spec}


def command(spec: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nascore.cli", "run", str(spec), "--out", str(out), *extra]


def run_to_end(spec: Path, out: Path, *extra: str) -> None:
    proc = subprocess.run(command(spec, out, *extra), capture_output=True, text=True, env=ENV, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr


def checkpoint_epoch(out: Path, phase: str) -> int | None:
    """The last epoch of ``phase`` the run checkpointed (None: none yet); checkpoints are replaced atomically."""
    path = out / "checkpoints" / f"{phase}.pt"
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except FileNotFoundError:
        return None


def epochs_logged(out: Path, phase: str) -> int:
    """How many rows of ``phase`` metrics.jsonl holds (an epoch's row is written just before its checkpoint)."""
    try:
        text = (out / "metrics.jsonl").read_text()
    except FileNotFoundError:
        return 0
    return sum(json.loads(line)["phase"] == phase for line in text.splitlines(keepends=True) if line.endswith("\n"))


def kill_inside(spec: Path, out: Path, phase: str, epoch: int, fraction: float) -> None:
    """Start a run and SIGKILL it inside ``epoch`` of ``phase`` (``epoch`` = the phase's epochs: after its last
    one). The kill waits for the checkpoint of ``epoch - 1`` (for epoch 0 of the search: the run directory's spec),
    then ``fraction`` of the time the epoch before took (when it was seen), so that it lands among the epoch's
    steps. Fails unless the run was still going and its last checkpoint is that of ``epoch - 1``."""
    log = out.parent / f"{out.name}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(command(spec, out), stdout=f, stderr=subprocess.STDOUT, env=ENV)
    target = epoch - 1 if epoch > 0 else None
    ckpt = out / "checkpoints" / f"{phase}.pt"
    try:
        deadline, seen_at, stamp = time.time() + DEADLINE_S, {}, None
        while proc.poll() is None and time.time() < deadline:
            if target is None and phase == "search" and (out / "spec.yaml").exists():
                break
            try:
                st = ckpt.stat()
            except FileNotFoundError:
                st = None
            if st is not None and (st.st_ino, st.st_mtime_ns) != stamp:  # a new checkpoint (loading one is slow)
                stamp, now = (st.st_ino, st.st_mtime_ns), time.time()
                seen = epochs_logged(out, phase) - 1
                seen_at.setdefault(seen, now)
                if seen == target:
                    if target - 1 in seen_at:  # the previous epoch's duration is known: go into this one
                        time.sleep(fraction * (now - seen_at[target - 1]))
                    break
            time.sleep(0.005)
    finally:
        alive = proc.poll() is None
        if alive:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert alive, f"the run ended or timed out before the kill point:\n{log.read_text()}"
    last = checkpoint_epoch(out, phase)
    assert last == target, f"the {phase} checkpoint of epoch {last} at the kill, expected {target}"
    assert not (out / "summary.json").exists()


def outputs(out: Path) -> dict[str, str]:
    """Every file a run writes that must not depend on an interruption: arch files, metrics, Pareto table,
    summary (pareto.png and the trained model are not byte-stable)."""
    names = sorted(p.name for p in out.glob("*.json")) + ["metrics.jsonl", "pareto.csv"]
    return {name: (out / name).read_text() for name in names if (out / name).exists()}


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``reference(strategy)`` -> (spec file, output directory of an uninterrupted run), run once per module."""
    done: dict[str, tuple[Path, Path]] = {}

    def get(strategy: str) -> tuple[Path, Path]:
        if strategy not in done:
            tmp = tmp_path_factory.mktemp(strategy)
            spec = tmp / "spec.yaml"
            if strategy == "oneshot-reuse":  # the oneshot run's supernet reused: the evolution, then two trainings
                _, trained = get("oneshot")
                data = oneshot_spec(trained.parent / "cache")
                data["strategy"]["supernet_file"] = str(trained / "supernet.pt")
            else:
                data = SPECS[strategy](tmp / "cache")
            spec.write_text(yaml.safe_dump(data))
            run_to_end(spec, tmp / "reference")
            done[strategy] = spec, tmp / "reference"
        return done[strategy]

    return get


# (strategy, phase, epoch to kill inside); epoch == the phase's epochs: after it, in the Pareto step or training.
# A kill before the first checkpoint (dnas-search0) resumes as a fresh run whatever the strategy. Kills inside an
# epoch e >= 2 land among its steps; inside epoch 1 (dnas-train1), as it starts.
KILLS = [("dnas", "search", 0), ("dnas", "search", 2), ("dnas", "search", 3), ("dnas", "train", 1),
         ("reinforce", "search", 2), ("reinforce", "search", 3),
         ("bmtas", "search", 2), ("bmtas", "search", 4), ("bmtas", "search", 5),
         ("random", "search", 2), ("predictor", "search", 2), ("predictor", "search", 4),
         ("oneshot", "search", 1), ("oneshot", "search", 2), ("oneshot", "search", 3),
         ("oneshot-reuse", "search", 1), ("oneshot-reuse", "search", 2),
         ("dnas-amp", "search", 2), ("dnas-amp", "train", 1)]


@pytest.mark.parametrize(("strategy", "phase", "epoch"), KILLS, ids=[f"{s}-{p}{e}" for s, p, e in KILLS])
def test_killed_run_resumes_to_the_same_outputs(reference, tmp_path, strategy, phase, epoch):
    spec, ref = reference(strategy)
    out = tmp_path / "killed"
    for attempt, fraction in enumerate([0.5, 0.0]):  # a busy machine may let the epoch finish: kill at its start
        try:
            kill_inside(spec, out, phase, epoch, fraction)
            break
        except AssertionError:
            if attempt == 1:
                raise
            out = tmp_path / "killed_again"
    run_to_end(spec, out, "--resume")
    assert rows(out) == rows(ref)
    assert outputs(out) == outputs(ref)
    arch_files = {"dnas": ["arch.json"], "reinforce": ["arch_classification.json", "arch_segmentation.json"],
                  "bmtas": ["branch_config.json"], "random": ["arch.json"], "predictor": ["arch.json"],
                  "oneshot": ["arch.json"], "oneshot-reuse": ["arch.json"], "dnas-amp": ["arch.json"]}[strategy]
    assert set(arch_files) <= set(outputs(out))
    if strategy == "oneshot":  # the supernet kept for reuse, whether the kill came before it was written or after
        kept, expected = (torch.load(d / "supernet.pt", weights_only=True)["network"] for d in (out, ref))
        assert kept.keys() == expected.keys() and all(torch.equal(kept[k], expected[k]) for k in kept)

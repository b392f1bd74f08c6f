"""Data parallelism under torchrun, end to end: ``python -m torch.distributed.run --nproc_per_node=2 -m nascore run``
with 2 gloo processes on the CPU. Both ranks hold the same architecture parameters and weights after every epoch
and derive the same arch; their data shards are disjoint; only rank 0 writes; a killed 2-process run resumes (with 2
processes) to exactly the uninterrupted run's results, and with 1 process (saying that the result may differ); a
killed launcher takes its ranks with it; a second writer of a run directory is refused on every rank; a user error
is printed once, and ``python -m nascore.torchrun`` exits 2 on it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from nascore.lock import LOCK_FILE, WriteLock
from processes import descendants, running
from tiny import dnas_spec

pytestmark = pytest.mark.slow

DEADLINE_S = 300
SEARCH_EPOCHS = 4

#: a test plugin: the ``dnas`` strategy that also saves, after every epoch, each rank's theta and network weights
PROBE = '''
    import os
    from typing import ClassVar

    import torch

    from nascore import distributed, hookimpl
    from nascore.errors import NascoreError
    from nascore.strategies.dnas import DNAS


    class ProbedDNAS(DNAS):
        name: ClassVar[str] = "probed-dnas"

        def run_epoch(self, epoch):
            row = super().run_epoch(epoch)
            state = {"theta": {k: v.detach().clone() for k, v in self.theta.items()},
                     "network": {k: v.clone() for k, v in self.ctx.network.state_dict().items()}}
            torch.save(state, os.path.join(os.environ["PROBE_DIR"], f"rank{distributed.rank()}_epoch{epoch}.pt"))
            return row


    class RankOneRefuses(DNAS):
        """A user error that rank 1 alone meets (as a node that cannot read a file would)."""

        name: ClassVar[str] = "rank-one-refuses"

        def run_epoch(self, epoch):
            if distributed.rank() == 1:
                raise NascoreError("rank 1 cannot read its shard")
            return super().run_epoch(epoch)


    @hookimpl
    def nascore_search_strategies():
        return [ProbedDNAS, RankOneRefuses]
'''

#: each rank's share of a sharded loader's batches for two epochs, and what ``check_same`` says of unlike values
COLLECTIVES = '''
    import json, os, sys

    import torch

    from nascore import distributed
    from nascore.data import loader
    from nascore.errors import NascoreError

    distributed.setup(torch.device("cpu"))
    data = torch.utils.data.TensorDataset(torch.arange(50))
    out = {epoch: [int(i) for (batch,) in loader(data, 8, None, shuffle=True, seed=1, epoch=int(epoch), shard=True)
                   for i in batch]
           for epoch in ("0", "1")}
    distributed.check_same({"layer01": "k3_e1"}, "the derived arch")
    try:
        distributed.check_same({"layer01": f"k{3 + 2 * distributed.rank()}_e1"}, "the derived arch")
    except NascoreError as exc:
        out["error"] = str(exc)
    with open(os.path.join(sys.argv[1], f"rank{distributed.rank()}.json"), "w") as f:
        json.dump(out, f)
'''


def torchrun(nproc: int, launcher: str = "torch.distributed.run") -> list[str]:
    """torchrun's command line; ``launcher`` ``nascore.torchrun``: nascore's, which exits 2 on a user error."""
    return [sys.executable, "-m", launcher, "--standalone", f"--nproc_per_node={nproc}"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The probe plugin installed (a distribution on PYTHONPATH) and the spec: DNAS with the probe, 4 search epochs
    (the first weights only), 2 training epochs of the found arch, a Pareto step."""
    root = tmp_path_factory.mktemp("ddp")
    site = root / "site"
    (site / "ddp_probe").mkdir(parents=True)
    (site / "ddp_probe" / "__init__.py").write_text("")
    (site / "ddp_probe" / "probe.py").write_text(textwrap.dedent(PROBE).lstrip())
    info = site / "ddp_probe-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ddp-probe\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[nascore]\nprobe = ddp_probe.probe\n")
    spec = dnas_spec(root / "cache", name="probed-dnas", epochs=SEARCH_EPOCHS)
    spec["train"]["references"] = False
    spec["pareto"] = {"samples": 2, "bn_batches": 1, "batch_size": 16}
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    return root


def env(work: Path, probe: Path) -> dict[str, str]:
    probe.mkdir(exist_ok=True)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(work / "site"), "PROBE_DIR": str(probe)}


def nascore_run(work: Path, nproc: int, out: str, *extra: str, launcher: str = "torch.distributed.run",
                spec: str = "spec.yaml") -> subprocess.CompletedProcess:
    command = [*torchrun(nproc, launcher), "-m", "nascore"] if nproc > 1 else [sys.executable, "-m", "nascore"]
    return subprocess.run([*command, "run", str(work / spec), "--out", str(work / out), *extra],
                          capture_output=True, text=True, env=env(work, work / f"probe-{out}"), timeout=DEADLINE_S,
                          check=False)


@pytest.fixture(scope="module")
def uninterrupted(work) -> subprocess.CompletedProcess:
    proc = nascore_run(work, 2, "full")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def outputs(out: Path) -> dict[str, str]:
    """What must not depend on an interruption: arch file, metrics, Pareto table, summary."""
    return {name: (out / name).read_text() for name in ("arch.json", "metrics.jsonl", "pareto.csv", "summary.json")}


def test_ranks_hold_the_same_arch_parameters_and_weights_after_every_epoch(work, uninterrupted):
    probe = work / "probe-full"
    for epoch in range(SEARCH_EPOCHS):
        rank0, rank1 = (torch.load(probe / f"rank{r}_epoch{epoch}.pt", weights_only=True) for r in (0, 1))
        for part in ("theta", "network"):
            assert rank0[part].keys() == rank1[part].keys()
            assert all(torch.equal(rank0[part][k], rank1[part][k]) for k in rank0[part]), (part, epoch)
    # the architecture was searched: theta moved away from its uniform start
    assert any(v.abs().max() > 0 for v in rank0["theta"].values())
    # the derived arch is every rank's (a mismatch is an error), and the argmax of the shared theta
    arch = json.loads((work / "full" / "arch.json").read_text())
    assert arch["choices"] == json.loads((work / "full" / "metrics.jsonl").read_text().splitlines()[SEARCH_EPOCHS - 1]
                                         )["top_choices"]


def test_only_rank_0_writes_and_prints(work, uninterrupted):
    out = work / "full"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "arch.json", "checkpoints/search.pt", "checkpoints/train.pt", "metrics.jsonl", "pareto.csv", "pareto.png",
        "spec.yaml", "summary.json", "train_model.pt"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in rows] == [("search", e) for e in range(SEARCH_EPOCHS)] + [
        ("train", 0), ("train", 1)]
    assert torch.load(out / "checkpoints" / "search.pt", weights_only=True)["world_size"] == 2
    assert uninterrupted.stdout.count("found arch (shared)") == 1
    assert uninterrupted.stderr.count("[search] epoch 0:") == 1


@pytest.fixture(scope="module")
def collectives(tmp_path_factory) -> tuple[dict, dict]:
    """What COLLECTIVES found on rank 0 and rank 1."""
    folder = tmp_path_factory.mktemp("collectives")
    script = folder / "collectives.py"
    script.write_text(textwrap.dedent(COLLECTIVES).lstrip())
    proc = subprocess.run([*torchrun(2), str(script), str(folder)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=DEADLINE_S, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rank0, rank1 = (json.loads((folder / f"rank{r}.json").read_text()) for r in (0, 1))
    return rank0, rank1


def test_data_shards_are_disjoint(collectives):
    rank0, rank1 = collectives
    for epoch in ("0", "1"):
        # 50 samples, 2 ranks: 25 each, 6 batches of 4 per rank (the global batch of 8 split in two)
        assert len(rank0[epoch]) == len(rank1[epoch]) == 24
        assert len(set(rank0[epoch]) | set(rank1[epoch])) == 48  # disjoint
    assert rank0["0"] != rank0["1"]  # set_epoch: each epoch its own order


def test_an_arch_that_differs_between_ranks_is_an_error(collectives):
    expected = ("the derived arch differs between the ranks of this torchrun job: rank 0 has {'layer01': 'k3_e1'}, "
                "rank 1 has {'layer01': 'k5_e1'}")
    assert [r["error"] for r in collectives] == [expected, expected]


def kill_after_first_epoch(work: Path, out: Path) -> None:
    """Start a 2-process run and SIGKILL torchrun's process group once the search's first epoch is checkpointed:
    the ranks (each in a process group of its own) must stop with their launcher, within seconds, before the run
    writes anything more."""
    ckpt = out / "checkpoints" / "search.pt"
    with open(work / f"{out.name}.log", "w") as log:
        proc = subprocess.Popen([*torchrun(2), "-m", "nascore", "run", str(work / "spec.yaml"), "--out", str(out)],
                                stdout=log, stderr=subprocess.STDOUT, env=env(work, work / f"probe-{out.name}"),
                                start_new_session=True)
    ranks: set[int] = set()
    try:
        deadline = time.time() + DEADLINE_S
        while proc.poll() is None and time.time() < deadline and not ckpt.exists():
            time.sleep(0.01)
    finally:
        alive = proc.poll() is None
        ranks = descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert alive, (work / f"{out.name}.log").read_text()
    assert len(ranks) >= 2, ranks
    deadline = time.time() + 30
    while running(ranks) and time.time() < deadline:
        time.sleep(0.05)
    assert not running(ranks), f"processes of the killed run still run: {sorted(running(ranks))}"
    assert torch.load(ckpt, weights_only=True)["epoch"] < SEARCH_EPOCHS - 1
    assert not (out / "summary.json").exists()
    assert (out / LOCK_FILE).exists()  # left by the killed rank 0: the resumes below take it over


@pytest.fixture(scope="module")
def killed(work) -> Path:
    """A 2-process run killed after its first search epoch (no process of it left), and a copy of it
    ("killed-1")."""
    kill_after_first_epoch(work, work / "killed")
    shutil.copytree(work / "killed", work / "killed-1")
    return work / "killed"


def test_a_killed_run_resumes_to_the_uninterrupted_result(work, uninterrupted, killed):
    proc = nascore_run(work, 2, "killed", "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "note:" not in proc.stderr
    assert outputs(killed) == outputs(work / "full")
    assert not (killed / LOCK_FILE).exists()


def test_a_second_writer_is_refused_on_every_rank(work, uninterrupted):
    """``--resume`` of a run directory another process writes: rank 0 is refused, every rank stops (none waits at a
    barrier for it) and the message is printed once; nothing is written. torchrun exits 1, as it does whenever a
    rank fails; ``python -m nascore.torchrun`` exits 2, as the command does."""
    out = work / "full"
    lock = WriteLock.of_directory(out).acquire()
    try:
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
        plain = nascore_run(work, 2, "full", "--resume")
        ours = nascore_run(work, 2, "full", "--resume", launcher="nascore.torchrun")
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    finally:
        lock.release()
    message = (f"error: {out} is being written by process {os.getpid()} (command: {' '.join(sys.argv)}); wait for "
               "it to finish or stop it")
    assert plain.returncode == 1 and ours.returncode == 2, (plain.stderr, ours.stderr)
    assert printed(plain.stderr, message) == 1 and printed(ours.stderr, message) == 1, (plain.stderr, ours.stderr)
    assert "Traceback" not in ours.stderr


def printed(stderr: str, message: str) -> int:
    """How often ``message`` (its first line) starts a line of ``stderr`` (torchrun's report quotes it indented)."""
    first = message.splitlines()[0]
    return sum(line.startswith(first) for line in stderr.splitlines())


def test_a_killed_run_resumes_with_another_number_of_processes(work, killed):
    proc = nascore_run(work, 1, "killed-1", "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "was written by 2 process(es), this run has 1" in proc.stderr
    assert "the result may differ from an uninterrupted run" in proc.stderr
    assert (work / "killed-1" / "summary.json").exists()


REFUSED = {
    "bad-spec": ({"seed": "zero"}, "error: {spec} is not a valid spec:\n  seed: Input should be a valid integer"),
    "odd-batch": ({"strategy": {"batch_size": 15}},
                  "error: batch_size: 15 does not split evenly over the 2 processes of this torchrun job (batch_size "
                  "is the global batch); give a multiple of 2"),
    "sync-batchnorm-on-cpu": ({"distributed": {"sync_batchnorm": True}},
                              "error: distributed.sync_batchnorm: SyncBatchNorm needs CUDA devices (NCCL); this "
                              "torchrun job runs on 'cpu'"),
    "fp16": ({"amp": {"dtype": "fp16"}},
             "error: amp.dtype: fp16 (a loss scaler per process) is not supported under torchrun; use bf16"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_what_a_torchrun_job_cannot_do_is_refused(work, case):
    """A spec that does not validate, a global batch that does not split over the ranks, SyncBatchNorm on CPU ranks,
    fp16's per-process loss scale: the message is printed once (not once per rank), ``python -m nascore.torchrun``
    exits 2 without torchrun's report, and no run directory is left."""
    change, message = REFUSED[case]
    data = yaml.safe_load((work / "spec.yaml").read_text())
    for key, value in change.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    (work / f"{case}.yaml").write_text(yaml.safe_dump(data))
    proc = nascore_run(work, 2, case, launcher="nascore.torchrun", spec=f"{case}.yaml")
    message = message.format(spec=work / f"{case}.yaml")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and printed(proc.stderr, message) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "FAILED" not in proc.stderr
    assert not (work / case).exists()


def test_an_error_of_one_rank_alone_is_printed_naming_it(work):
    """A user error that rank 1 alone meets (rank 0 says nothing of it): printed once, naming the rank; exit 2.
    (Rank 0, waiting in a collective for rank 1, may report the connection it lost: that is no user error.)"""
    data = yaml.safe_load((work / "spec.yaml").read_text())
    data["strategy"]["name"] = "rank-one-refuses"
    (work / "rank-one.yaml").write_text(yaml.safe_dump(data))
    proc = nascore_run(work, 2, "rank-one", launcher="nascore.torchrun", spec="rank-one.yaml")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert printed(proc.stderr, "error (rank 1): rank 1 cannot read its shard") == 1, proc.stderr
    assert "FAILED" not in proc.stderr  # torchrun's report


def test_train_under_torchrun_trains_as_the_run_did(work, uninterrupted):
    """``torchrun -m nascore train ARCH --spec SPEC``: the found arch trained again on 2 ranks, as the run's own
    training did."""
    proc = subprocess.run([*torchrun(2), "-m", "nascore", "train", str(work / "full" / "arch.json"), "--spec",
                           str(work / "spec.yaml"), "--out", str(work / "train")],
                          capture_output=True, text=True, env=env(work, work / "probe-train"), timeout=DEADLINE_S,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trained, searched = (json.loads((work / d / "summary.json").read_text()) for d in ("train", "full"))
    assert trained["archs"]["shared"]["train"] == searched["archs"]["shared"]["train"]


@pytest.mark.parametrize("strategy", ["reinforce", "bmtas", "dnas-bf16", "oneshot"])
def test_other_searches_derive_one_arch_on_every_rank(tmp_path, strategy):
    """REINFORCE (sampled paths, rewards averaged over the ranks), BMTAS (one-hot warm-up, Gumbel search), DNAS
    with bf16 autocast and channels_last, and one-shot evolution (the supernet trained data-parallel) under
    torchrun: the run ends (every rank derived the same arch: a mismatch is an error) and rank 0 wrote it."""
    from test_resume import SPECS

    spec = SPECS[strategy](tmp_path / "cache")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    proc = subprocess.run([*torchrun(2), "-m", "nascore", "run", str(tmp_path / "spec.yaml"), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=DEADLINE_S, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for entry in summary["archs"].values():
        assert json.loads((tmp_path / "run" / entry["file"]).read_text())["choices"] == entry["choices"]
    if strategy == "oneshot":
        assert torch.load(tmp_path / "run" / "supernet.pt", weights_only=True)["format"] == "nascore-supernet"
        # its supernet reused under torchrun: no supernet epoch, the evolution the run that trained it had
        proc = subprocess.run([*torchrun(2), "-m", "nascore", "run", str(tmp_path / "spec.yaml"), "--out",
                               str(tmp_path / "reuse"), "--supernet", str(tmp_path / "run" / "supernet.pt")],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              timeout=DEADLINE_S, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        before, after = ([json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()
                          if json.loads(line)["phase"] == "search"] for d in ("run", "reuse"))
        same = ("epoch", "seconds", "time")
        assert {k: v for k, v in after[0].items() if k not in same} == \
            {k: v for k, v in before[2].items() if k not in same}
        assert json.loads((tmp_path / "reuse" / "summary.json").read_text())["archs"].keys() == summary["archs"].keys()



def _failure(tmp_path: Path, rank: int, exitcode: int, message: str | None, timestamp: int):
    """A rank's failure as torchrun's agent reads it: its exit status and, when the rank wrote one, its error file
    (as the ``nascore`` command writes it on a user error)."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    error_file = tmp_path / f"error{rank}.json"
    if message is not None:
        error_file.write_text(json.dumps({"message": {"message": message, "extraInfo": {
            "timestamp": str(timestamp), "exitcode": 2}}}))
    return ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=exitcode, error_file=str(error_file))


def _launch(monkeypatch, failures) -> int:
    """``python -m nascore.torchrun`` on a job whose ranks fail as ``failures`` say."""
    import torch.distributed.run as torch_run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from nascore import torchrun as launcher

    def run(args):
        raise ChildFailedError("nascore", failures)

    monkeypatch.setattr(torch_run, "run", run)
    return launcher.main(["--nproc_per_node=2", "-m", "nascore", "run", "spec.yaml"])


@pytest.mark.parametrize("stopped", [False, True], ids=["exited", "stopped-by-torchrun"])
def test_a_user_error_of_one_rank_stands_when_the_other_rank_fails_on_it(tmp_path, monkeypatch, capsys, stopped):
    """Rank 1 records a user error; rank 0, losing its connection to rank 1, fails with status 1 (no error file) and
    torchrun, seeing rank 0 fail, stops rank 1 (SIGTERM) before it exits. The user error is still the cause: exit 2,
    its message, no torchrun report. (CI met this order; it depends on timing, so it is built here.)"""
    now = int(time.time())
    failures = {1: _failure(tmp_path, 1, -15 if stopped else 2, "rank 1 cannot read its shard", now - 1),
                0: _failure(tmp_path, 0, 1, None, now)}
    assert _launch(monkeypatch, failures) == 2
    assert capsys.readouterr().err == "error (rank 1): rank 1 cannot read its shard\n"


def test_a_failure_before_the_user_error_is_torchruns(tmp_path, monkeypatch):
    """A rank that failed (no user error) before another rank met a user error: torchrun's report, status 1."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    now = int(time.time())
    failures = {0: _failure(tmp_path, 0, 1, None, now), 1: _failure(tmp_path, 1, 2, "later", now + 5)}
    with pytest.raises(ChildFailedError):
        _launch(monkeypatch, failures)

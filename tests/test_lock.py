"""One writer per directory (nascore.lock): while one process writes a run directory, a performance collection,
pseudo-labels, a compare folder or a latency table, a second writer is refused at once (exit 2, naming the folder
and the process that holds it) and writes nothing; a lock left by a killed process never blocks a resume; a
writer that ends leaves no lock file. The two-writers scenario end to end (``nascore run`` and ``--resume`` at
once) and a refused ``--resume`` under torchrun: here and in test_distributed.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from nascore.cli import main
from nascore.errors import NascoreError
from nascore.lock import LOCK_FILE, WriteLock
from workspace import snapshot

COMMAND = " ".join(sys.argv)


def refusal(target: Path | str, pid: int = os.getpid(), command: str = COMMAND) -> str:
    return f"{target} is being written by process {pid} (command: {command}); wait for it to finish or stop it"


def holder(path: Path) -> subprocess.Popen:
    """Another process that holds ``path``'s lock until it is killed."""
    code = ("import sys, time\nfrom nascore.lock import WriteLock\n"
            "lock = WriteLock.of_directory(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


# -- the lock ----------------------------------------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    folder = tmp_path / "new" / "d"
    first = WriteLock.of_directory(folder).acquire()
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    with pytest.raises(NascoreError) as refused:
        WriteLock.of_directory(folder).acquire()  # another open file: flock refuses it in this process too
    assert str(refused.value) == refusal(folder)
    first.release()
    assert not (tmp_path / "new").exists()  # the folders made for the lock, left empty, are removed
    with WriteLock.of_directory(folder):  # given back: the next writer takes it
        (folder / "a.txt").write_text("a")
    assert [p.name for p in folder.iterdir()] == ["a.txt"]


def test_a_writer_that_changed_nothing_leaves_the_folder_as_it_was(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("x")
    os.utime(tmp_path / "d", ns=(10**18, 10**18))
    before = snapshot(tmp_path)
    with WriteLock.of_directory(tmp_path / "d"):
        pass
    assert snapshot(tmp_path) == before  # its times too


def test_a_lock_of_a_killed_process_is_taken_over(tmp_path):
    folder = tmp_path / "d"
    proc = holder(folder)
    with pytest.raises(NascoreError) as refused:
        WriteLock.of_directory(folder).acquire()
    assert str(refused.value).startswith(f"{folder} is being written by process {proc.pid} (command: -c ")
    proc.kill()
    proc.wait()
    assert (folder / LOCK_FILE).exists()  # left behind by the killed holder
    with WriteLock.of_directory(folder):
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert list(folder.iterdir()) == []  # the holder made the folder: it stays


def test_a_lock_file_that_is_no_file_is_refused(tmp_path):
    (tmp_path / "d" / LOCK_FILE).mkdir(parents=True)
    with pytest.raises(NascoreError, match=f"its lock file {tmp_path / 'd' / LOCK_FILE} cannot be opened"):
        WriteLock.of_directory(tmp_path / "d").acquire()


# -- every command that writes a folder over time ------------------------------------------------------------------
def spec(cache: Path, **extra) -> dict:
    return {"seed": 0,
            "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 32, "num_val": 16, "num_test": 4,
                        "cache_dir": str(cache)},
            "tasks": [{"name": "classification"}],
            "space": {"name": "fbnet", "width": 0.25, "input_size": 32, "head_channels": 64},
            "strategy": {"name": "dnas", "epochs": 1, "warmup_epochs": 0, "batch_size": 16, "max_steps": 1},
            "cost": {"name": "flops"}, "pareto": {"samples": 0}, "train": {"epochs": 1, "batch_size": 16},
            **extra}


#: command -> (argv, the path it writes: a folder, or the latency table)
WRITERS = {
    "run": (["run", "s.yaml", "--out", "out"], "out"),
    "train": (["train", "fbnet_a", "--spec", "s.yaml", "--out", "out"], "out"),
    "bench-collect": (["bench", "collect", "s.yaml", "--archs", "2", "--out", "out"], "out"),
    "bench-pseudo-label": (["bench", "pseudo-label", "s.yaml", "--archs", "2", "--out", "out"], "out"),
    "compare": (["compare", "s.yaml", "--seeds", "1", "--out", "out"], "out"),
    "lut-build": (["lut", "build", "lat.yaml", "--out", "table.json", "--calibrate", "0"], "table.json"),
}


@pytest.mark.parametrize("command", WRITERS)
def test_a_second_writer_of_each_kind_is_refused(command, ws, cache_dir, capsys):
    argv, written = WRITERS[command]
    (ws / "s.yaml").write_text(yaml.safe_dump(spec(cache_dir)))
    (ws / "lat.yaml").write_text(yaml.safe_dump(spec(cache_dir, cost={"name": "latency", "min_run_time": 0.005})))
    lock = (WriteLock.of_file if command == "lut-build" else WriteLock.of_directory)(ws / written).acquire()
    before = snapshot(ws)
    start = time.perf_counter()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: {refusal(written)}\n"
    assert time.perf_counter() - start < 30
    assert snapshot(ws) == before  # nothing written
    lock.release()


@pytest.mark.slow
def test_a_lock_left_by_a_killed_run_does_not_block_its_resume(ws, cache_dir, capsys):
    (ws / "s.yaml").write_text(yaml.safe_dump(spec(cache_dir, strategy={**spec(cache_dir)["strategy"],
                                                                         "epochs": 2})))
    assert main(["run", "s.yaml", "--out", "out"]) == 0
    assert not (ws / "out" / LOCK_FILE).exists()  # a run that ended leaves no lock file
    proc = holder(ws / "out")
    capsys.readouterr()
    assert main(["run", "s.yaml", "--out", "out", "--resume"]) == 2
    assert f"error: out is being written by process {proc.pid} " in capsys.readouterr().err
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(["run", "s.yaml", "--out", "out", "--resume"]) == 0
    assert not (ws / "out" / LOCK_FILE).exists()


#: a test plugin: a lifecycle hook that holds a run after its first epoch until the file GATE names exists
GATE = '''
    import os
    import time

    from nascore import hookimpl


    @hookimpl
    def nascore_epoch_end(run, epoch, metrics):
        gate = os.environ.get("GATE")
        deadline = time.time() + 300
        while gate and epoch == 0 and not os.path.exists(gate) and time.time() < deadline:
            time.sleep(0.05)
'''


@pytest.mark.slow
def test_two_writers_of_one_run_directory(tmp_path, cache_dir):
    """``nascore run SPEC --out D`` runs; ``nascore run SPEC --out D --resume`` started meanwhile is refused (exit
    2, naming D and the first process) within seconds; the first ends as it would have alone."""
    site = tmp_path / "site"
    (site / "gate_plugin").mkdir(parents=True)
    (site / "gate_plugin" / "__init__.py").write_text(textwrap.dedent(GATE).lstrip())
    (site / "gate_plugin-0.0.1.dist-info").mkdir()
    (site / "gate_plugin-0.0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: gate-plugin\n"
                                                                  "Version: 0.0.1\n")
    (site / "gate_plugin-0.0.1.dist-info" / "entry_points.txt").write_text("[nascore]\ngate = gate_plugin\n")
    data = spec(cache_dir, strategy={**spec(cache_dir)["strategy"], "epochs": 3})
    del data["train"]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    out, gate = tmp_path / "out", tmp_path / "gate"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(site)}
    command = [sys.executable, "-m", "nascore", "run", str(tmp_path / "s.yaml"), "--out", str(out)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**env, "GATE": str(gate)})
    try:
        deadline = time.time() + 300
        while first.poll() is None and time.time() < deadline and not (out / "metrics.jsonl").exists():
            time.sleep(0.05)
        metrics = (out / "metrics.jsonl").read_text()
        start = time.perf_counter()
        second = subprocess.run([*command, "--resume"], capture_output=True, text=True, env=env, timeout=300)
        assert time.perf_counter() - start < 60
        assert second.returncode == 2, second.stderr
        assert f"error: {out} is being written by process {first.pid} (command: " in second.stderr
        assert "Traceback" not in second.stderr
        assert (out / "metrics.jsonl").read_text() == metrics  # the refused writer wrote nothing
    finally:
        gate.touch()
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in rows] == [("search", 0), ("search", 1), ("search", 2)]
    assert sorted(p.name for p in out.iterdir()) == ["arch.json", "checkpoints", "metrics.jsonl", "spec.yaml",
                                                    "summary.json"]

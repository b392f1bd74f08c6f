"""Searches judged against random (AIO-P part 2): the ``random`` strategy, the predictor-guided ``predictor``
strategy (regularised evolution scored by a predictor file), the Pareto step of strategies that train their archs,
and ``nascore compare``. Kill-and-resume of both strategies is in test_resume.py."""
from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from nascore.arch import Arch
from nascore.cli import main
from nascore.data import loader
from nascore.performance.oneshot import batches
from nascore.performance.proxies import naswot
from nascore.rundir import build_run
from nascore.spec import validate_spec
from nascore.strategies.evolution import PredictorSearch
from nascore.strategies.oneshot import BN_STREAM, OneShotSearch
from nascore.strategy import SearchContext, evaluate_arch
from nascore.task import build_network
from tiny import ONE_SHOT_SPACE, predictor_file, standalone_spec

TARGET = 1.5e6  # standalone_spec's budget, in multiply-adds


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Path:
    return predictor_file(tmp_path_factory.mktemp("predictor"))


def write(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_random_search_from_a_spec(tmp_path, cache_dir):
    """Three distinct archs within the budget, each trained; the found arch is the best on validation, the Pareto
    table lists the three as trained (derived first), and retraining the found arch with the same budget gives the
    metrics it had in the search."""
    spec = write(tmp_path, standalone_spec(cache_dir, {"name": "random", "archs": 3}))
    out = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    search = [r for r in rows(out) if r["phase"] == "search"]
    assert [r["archs_trained"] for r in search] == [1, 2, 3]
    assert all(r["cost"] <= TARGET for r in search)
    top1 = [r["trained/classification/top1"] for r in search]
    best = search[-1]["best"]
    assert top1[int(best.removeprefix("arch_"))] == max(top1)
    with open(out / "pareto.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["arch"] for r in table][0] == "derived" and len(table) == 3
    assert len({r["choices"] for r in table}) == 3
    arch = Arch.load(out / "arch.json")
    assert json.loads(table[0]["choices"]) == arch.choices
    summary = json.loads((out / "summary.json").read_text())["archs"]["shared"]
    assert summary["train"]["val/classification/top1"] == summary["search"]["val/classification/top1"] == max(top1)


def _context(tmp_path: Path, spec: dict, seed: int) -> SearchContext:
    """What the runner hands a strategy, without a supernet network (the evolution trains nothing)."""
    run = build_run(validate_spec({**spec, "seed": seed}), tmp_path / f"unused{seed}", False)
    supernet = run.parts.space.supernet()
    cost = run.spec.cost.cls(run.spec.cost.config)
    table = supernet.price(cost, run.parts.space.input_size, run.parts.info.in_channels)
    return SearchContext(run.parts, None, supernet, cost, table, run.spec.objective)


def _evolve(tmp_path: Path, cache: Path, predictor: Path, seed: int, **options) -> list[dict]:
    strategy = {"name": "predictor", "file": str(predictor), "population": 6, "cycles": 20, "sample_size": 3,
                "top_k": 1, **options}
    spec = standalone_spec(cache, strategy)
    search = PredictorSearch(PredictorSearch.Config.model_validate({k: v for k, v in strategy.items() if k != "name"}))
    search.setup(_context(tmp_path, spec, seed))
    row = search.evolve()
    assert row["proposed"] == 6 + strategy["cycles"] and row["distinct"] == len(search.proposals)
    return search.proposals


def test_evolution_respects_the_budget_and_is_deterministic_per_seed(tmp_path, cache_dir, predictor):
    first = _evolve(tmp_path, cache_dir, predictor, seed=0)
    assert all(p["cost"] <= TARGET for p in first)
    assert len(first) > 6  # the cycles proposed children besides the initial population
    assert _evolve(tmp_path, cache_dir, predictor, seed=0) == first
    assert _evolve(tmp_path, cache_dir, predictor, seed=1) != first


def test_evolution_climbs_the_score_it_is_given(tmp_path, cache_dir, predictor):
    """Ranked by multiply-adds (the file's ``macs`` baseline, a line in MACs), the evolution drifts towards the
    end of the budget the line favours: its children score better than the random initial population."""
    proposals = _evolve(tmp_path, cache_dir, predictor, seed=0, rank_by="macs", cycles=40)
    initial, children = proposals[:6], proposals[6:]
    assert max(p["score"] for p in children) > max(p["score"] for p in initial)


@pytest.mark.parametrize(("options", "expected"), [
    ({"file": "missing.pt"}, "missing.pt"),
    ({"rank_by": "nosuch"}, "strategy.rank_by"),
    ({"task": "saliency"}, "strategy.task"),
    ({"sample_size": 30}, "strategy.sample_size"),
], ids=["missing-file", "rank-by", "task", "sample-size"])
def test_bad_predictor_strategy_is_named(tmp_path, cache_dir, predictor, capsys, options, expected):
    strategy = {"name": "predictor", "file": str(predictor), "population": 6, "cycles": 2, "top_k": 1, **options}
    spec = write(tmp_path, standalone_spec(cache_dir, strategy))
    assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_predictor_file_of_another_input_size_is_refused(tmp_path, cache_dir, predictor, capsys):
    spec = standalone_spec(cache_dir, {"name": "predictor", "file": str(predictor), "top_k": 1})
    spec["dataset"]["image_size"] = spec["space"]["input_size"] = 64
    spec["cost"]["loss"]["target"] = 1e9
    assert main(["run", str(write(tmp_path, spec)), "--out", str(tmp_path / "run")]) == 2
    assert "32 px" in capsys.readouterr().err


def test_compare_runs_each_spec_per_seed_and_reuses_finished_runs(tmp_path, cache_dir, capsys):
    random_spec = write(tmp_path, standalone_spec(cache_dir, {"name": "random", "archs": 2}), "random.yaml")
    dnas = standalone_spec(cache_dir, {"name": "dnas", "epochs": 2, "warmup_epochs": 1, "batch_size": 16,
                                       "max_steps": 2})
    del dnas["strategy"]["train"]
    dnas_spec = write(tmp_path, dnas, "dnas.yaml")
    out = tmp_path / "cmp"
    args = ["compare", str(random_spec), str(dnas_spec), "--seeds", "2", "--out", str(out), "--set", "pareto.samples=0"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "random" in table and "dnas" in table and "classification/top1" in table
    results = json.loads((out / "compare.json").read_text())
    assert sorted(results) == ["dnas/seed0", "dnas/seed1", "random/seed0", "random/seed1"]
    for key, run in results.items():
        (entry,) = run["entries"]
        summary = json.loads((out / key / "summary.json").read_text())["archs"]["shared"]
        assert entry["value"] == summary["train"]["val/classification/top1"]
        assert entry["seed"] == int(key[-1])
        assert entry["archs_trained"] == (2 if key.startswith("random") else 0)
    assert (out / "compare.png").stat().st_size > 0
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    assert main(args) == 0  # finished runs are read back, not run again
    assert capsys.readouterr().out == table
    assert {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")} == stamps


def _dnas(cache_dir: Path, epochs: int = 2) -> dict:
    spec = standalone_spec(cache_dir, {"name": "dnas", "epochs": epochs, "warmup_epochs": 1, "batch_size": 16,
                                       "max_steps": 2})
    del spec["strategy"]["train"]
    return spec


def test_compare_counts_the_search_time_of_every_attempt(tmp_path, cache_dir, capsys, monkeypatch):
    """A run interrupted after its first search epoch and resumed by the same command: its search time is the
    search checkpoint's, which adds the epochs of both attempts (not None, not the second attempt's alone)."""
    from nascore.fileio import load_checkpoint
    from nascore.rundir import PhaseLoop

    spec = write(tmp_path, _dnas(cache_dir), "dnas.yaml")
    out = tmp_path / "cmp"
    args = ["compare", str(spec), "--seeds", "1", "--out", str(out), "--set", "pareto.samples=0"]
    ended = PhaseLoop.ended

    def interrupted(self, epoch, row):
        ended(self, epoch, row)
        if self.phase == "search":
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(PhaseLoop, "ended", interrupted)
        assert main(args) == 130
    ckpt = out / "dnas" / "seed0" / "checkpoints" / "search.pt"
    first = load_checkpoint(ckpt)
    assert first["epoch"] == 0 and first["seconds"] > 0
    assert main(args) == 0
    (entry,) = json.loads((out / "compare.json").read_text())["dnas/seed0"]["entries"]
    total = load_checkpoint(ckpt)["seconds"]
    assert total > first["seconds"] and entry["search_seconds"] == round(total, 1)
    table = capsys.readouterr().out
    assert f"| {total / 60:.1f} |" in table


def test_compare_of_a_changed_spec_says_what_changed(tmp_path, cache_dir, capsys):
    """The folder's run was made from the spec before it changed: refused before anything runs, naming the field
    that changed and what to do; nothing is written."""
    from workspace import snapshot

    spec = write(tmp_path, _dnas(cache_dir), "dnas.yaml")
    out = tmp_path / "cmp"
    args = ["compare", str(spec), "--seeds", "1", "--out", str(out), "--set", "pareto.samples=0"]
    assert main(args) == 0
    capsys.readouterr()
    write(tmp_path, _dnas(cache_dir, epochs=3), "dnas.yaml")
    before = snapshot(out)
    assert main(args) == 2
    err = capsys.readouterr().err
    run_dir = out / "dnas" / "seed0"
    assert (f"error: {run_dir} holds a run of {spec} as it was before it changed (or with other --set options): "
            f"strategy.epochs: 2, now 3. To reuse and resume the runs in {out}, give the specs and --set options "
            f"they were made with; to compare the changed spec, pass another --out (or delete {run_dir} to run it "
            "again here)") in err
    assert snapshot(out) == before
    assert main([*args[:-1], "pareto.samples=1"]) == 2  # --set options that differ: the same refusal
    assert "pareto.samples: 0, now 1" in capsys.readouterr().err


def test_compare_refuses_specs_that_train_differently(tmp_path, cache_dir, capsys):
    a = standalone_spec(cache_dir, {"name": "random", "archs": 1})
    b = standalone_spec(cache_dir, {"name": "random", "archs": 1})
    b["train"]["epochs"] = 2
    args = ["compare", str(write(tmp_path, a, "a.yaml")), str(write(tmp_path, b, "b.yaml")), "--out",
            str(tmp_path / "cmp")]
    assert main(args) == 2
    assert "train: block differs" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_random_strategy_without_a_budget_draws_from_the_whole_space(tmp_path, cache_dir):
    spec = standalone_spec(cache_dir, {"name": "random", "archs": 2})
    del spec["cost"]
    out = tmp_path / "run"
    assert main(["run", str(write(tmp_path, spec)), "--out", str(out), "--set", "pareto.samples=0"]) == 0
    assert all("cost" not in r for r in rows(out) if r["phase"] == "search")
    assert torch.load(out / "checkpoints" / "search.pt", weights_only=True)["epoch"] == 1


def test_oneshot_trains_the_supernet_then_evolves_on_it_then_trains_the_best(tmp_path, cache_dir):
    """``oneshot``: the supernet's epochs (its loss falls), the evolution (archs within the budget, scored on the
    shared weights as ``evaluate_arch`` scores them), then the archs scored best trained in order of score; the
    found arch is the one of them best on validation."""
    strategy = {"name": "oneshot", "supernet": {"epochs": 3, "batch_size": 16, "lr": 0.05}, "population": 6,
                "cycles": 6, "sample_size": 3, "top_k": 2, "bn_batches": 2}
    spec = standalone_spec(cache_dir, strategy)
    spec["space"] = {**spec["space"], **ONE_SHOT_SPACE}
    out = tmp_path / "run"
    assert main(["run", str(write(tmp_path, spec)), "--out", str(out)]) == 0
    search = [r for r in rows(out) if r["phase"] == "search"]
    supernet, evolution, trained = search[:3], search[3], search[4:]
    assert supernet[-1]["supernet_loss"] < supernet[0]["supernet_loss"]
    assert evolution["proposed"] == 12 and evolution["cost"] <= TARGET
    assert [r["arch"] for r in trained] == ["top_1", "top_2"]
    assert trained[0]["score"] == evolution["score"] >= trained[1]["score"]
    assert all(r["cost"] <= TARGET for r in trained)
    top1 = {r["arch"]: r["trained/classification/top1"] for r in trained}
    assert top1[trained[-1]["best"]] == max(top1.values())


def _oneshot(tmp_path: Path, cache: Path, **options: Any) -> tuple[OneShotSearch, Any]:
    """A oneshot search of the tiny space set up with ``options``, its supernet trained one epoch."""
    strategy = {"name": "oneshot", "supernet": {"epochs": 1, "batch_size": 16}, "population": 5, "cycles": 0,
                "sample_size": 2, "top_k": 1, "bn_batches": 2, **options}
    spec = standalone_spec(cache, strategy)
    spec["space"] = {**spec["space"], **ONE_SHOT_SPACE}
    run = build_run(validate_spec(spec), tmp_path / "unused", False)
    supernet = run.parts.space.supernet()
    network = build_network(supernet, run.parts.tasks, run.parts.info)
    search = OneShotSearch(OneShotSearch.Config.model_validate({k: v for k, v in strategy.items() if k != "name"}))
    cost = run.spec.cost.cls(run.spec.cost.config)
    table = supernet.price(cost, run.parts.space.input_size, run.parts.info.in_channels)
    search.setup(SearchContext(run.parts, network, supernet, cost, table, run.spec.objective))
    search.train_supernet(0)
    return search, run


def _on_shared_weights(search: OneShotSearch, run: Any, choices: dict[str, str]) -> dict[str, float]:
    """``choices``' validation metrics on the search's supernet, BatchNorm re-estimated on its ``bn_batches`` batches
    (what the strategy scores)."""
    bn = itertools.islice(batches(run.parts, search.config.supernet, 0, BN_STREAM), search.config.bn_batches)
    return evaluate_arch(search.ctx, choices, None, bn, 16)


def test_oneshot_scores_an_arch_as_its_path_on_the_shared_weights(tmp_path, cache_dir):
    """An arch's score is its validation metric on the supernet's weights, BatchNorm re-estimated on its path on the
    strategy's batches (``evaluate_arch``), the same batches for every arch: scored twice, an arch scores the same
    even after another arch has set its own statistics."""
    search, run = _oneshot(tmp_path, cache_dir, population=2)
    archs = [{d.name: d.options[i % len(d.options)] for d in search.ctx.supernet.decisions()} for i in (0, 1)]
    images = torch.zeros(1)
    first = [search.score_arch(a, images) for a in archs]
    assert search.score_arch(archs[0], images) == first[0]
    assert first == [_on_shared_weights(search, run, a)["classification/top1"] for a in archs]


def test_oneshot_scores_by_the_loss_lowest_first(tmp_path, cache_dir):
    """``score: loss``: an arch's score is its validation loss on the shared weights, and the evolution ranks the
    lowest first."""
    search, run = _oneshot(tmp_path, cache_dir, score="loss")
    search.evolve()
    for p in search.proposals:
        assert p["score"] == _on_shared_weights(search, run, p["choices"])["classification/loss"]
    best = min(search.proposals, key=lambda p: p["score"])
    row = search.run_epoch(search.evolution_epoch + 1)
    assert row["score"] == best["score"] and not [k for k in row if k.startswith("score/")]  # one measurement


def test_oneshot_adds_a_zero_cost_proxy_standardised_over_the_initial_population(tmp_path, cache_dir):
    """``proxy: naswot``: an arch's score is its NASWOT score (the untrained arch built with the run's seed, on the
    evolution's batch) plus its top-1 on the shared weights, each standardised by its mean and standard deviation
    over the initial population; so over that population the scores average 0."""
    search, run = _oneshot(tmp_path, cache_dir, proxy="naswot")
    search.evolve()
    archs = [p["choices"] for p in search.proposals]
    assert len(archs) == 5
    images, _ = next(iter(loader(run.parts.train_set, 32, run.parts.collate, shuffle=True, seed=run.parts.seed)))
    proxies, shared = [], []
    for choices in archs:
        torch.manual_seed(run.parts.seed)
        backbone = run.parts.space.build(Arch(space="fbnet", config=run.parts.space.arch_config(), choices=choices))
        proxies.append(naswot(backbone, images))
        shared.append(_on_shared_weights(search, run, choices)["classification/top1"])
    z = [(torch.tensor(v, dtype=torch.float64) - statistics.fmean(v)) / (statistics.pstdev(v) or 1.0)
         for v in (proxies, shared)]  # archs that all score alike on the shared weights: no scale to divide by
    assert [p["score"] for p in search.proposals] == pytest.approx((z[0] + z[1]).tolist(), abs=1e-9)
    assert statistics.fmean(p["score"] for p in search.proposals) == pytest.approx(0, abs=1e-9)
    # the two measurements are kept beside the score, and written in the row of an arch the search trains
    assert [p["parts"]["naswot"] for p in search.proposals] == pytest.approx(proxies, abs=1e-9)
    assert [p["parts"]["shared"] for p in search.proposals] == pytest.approx(shared, abs=1e-9)
    best = max(search.proposals, key=lambda p: p["score"])
    row = search.run_epoch(search.evolution_epoch + 1)
    assert (row["score/naswot"], row["score/shared"]) == (best["parts"]["naswot"], best["parts"]["shared"])


def test_oneshot_adds_a_predictor_files_prediction_as_its_second_score(tmp_path, cache_dir):
    """``predictor: FILE`` (AIO-P): the file's prediction of the arch, made higher-is-better, takes the proxy's
    place: each of it and the shared weights' top-1 standardised over the initial population, their sum the score;
    the prediction is kept beside the score as the file predicts it."""
    from nascore.performance.predictors.file import PredictorFile
    from nascore.strategies.evolution import predicted

    file = predictor_file(cache_dir.parent)
    search, run = _oneshot(tmp_path, cache_dir, predictor=str(file))
    search.evolve()
    archs = [p["choices"] for p in search.proposals]
    entry = PredictorFile.load(file).tasks["classification"]
    sign = 1.0 if entry.higher_is_better else -1.0
    images, _ = next(iter(loader(run.parts.train_set, 32, run.parts.collate, shuffle=True, seed=run.parts.seed)))
    predictions = [predicted(entry.predictor, run.parts, choices, images) for choices in archs]
    assert len(set(predictions)) > 1  # the file tells these archs apart
    shared = [_on_shared_weights(search, run, choices)["classification/top1"] for choices in archs]
    z = [(torch.tensor(v, dtype=torch.float64) - statistics.fmean(v)) / (statistics.pstdev(v) or 1.0)
         for v in ([sign * p for p in predictions], shared)]
    assert [p["score"] for p in search.proposals] == pytest.approx((z[0] + z[1]).tolist(), abs=1e-9)
    assert [p["parts"]["predictor"] for p in search.proposals] == pytest.approx(predictions, abs=1e-9)
    assert [p["parts"]["shared"] for p in search.proposals] == pytest.approx(shared, abs=1e-9)


def test_oneshot_refuses_two_second_scores_and_a_predictor_of_another_input_size(tmp_path, cache_dir, capsys):
    file = str(predictor_file(cache_dir.parent))
    spec = reuse_spec(cache_dir, strategy__proxy="naswot", strategy__predictor=file)
    assert main(["run", str(write(tmp_path, spec)), "--out", str(tmp_path / "both")]) == 2
    assert "give proxy or predictor" in capsys.readouterr().err and not (tmp_path / "both").exists()
    spec = reuse_spec(cache_dir, strategy__predictor=file, space__input_size=64, dataset__image_size=64)
    assert main(["run", str(write(tmp_path, spec, "big.yaml")), "--out", str(tmp_path / "big")]) == 2
    assert f"strategy.predictor: {file} was fitted on archs measured at 3 x 32 px" in capsys.readouterr().err


ONE_SHOT = {"name": "oneshot", "supernet": {"epochs": 2, "batch_size": 16, "lr": 0.05}, "population": 6,
            "cycles": 6, "sample_size": 3, "top_k": 1, "bn_batches": 2}


@pytest.fixture(scope="module")
def oneshot_run(tmp_path_factory, cache_dir) -> Path:
    """A oneshot search (2 supernet epochs) whose supernet.pt the reuse tests take."""
    tmp = tmp_path_factory.mktemp("oneshot")
    spec = standalone_spec(cache_dir, ONE_SHOT)
    spec["space"] = {**spec["space"], **ONE_SHOT_SPACE}
    out = tmp / "run"
    assert main(["run", str(write(tmp, spec)), "--out", str(out)]) == 0
    return out


def reuse_spec(cache_dir: Path, **changes: Any) -> dict:
    spec = standalone_spec(cache_dir, ONE_SHOT)
    spec["space"] = {**spec["space"], **ONE_SHOT_SPACE}
    for key, value in changes.items():
        block, field = key.split("__")
        spec[block] = {**spec[block], field: value}
    return spec


def test_a_reused_supernet_gives_the_evolution_of_the_run_that_trained_it(oneshot_run, tmp_path, cache_dir):
    """``--supernet``: no supernet epoch; with the same budget the evolution scores the same archs the same as the
    run that trained the supernet; with a smaller budget it finds an arch within that budget."""
    out = tmp_path / "same"
    assert main(["run", str(write(tmp_path, reuse_spec(cache_dir))), "--out", str(out),
                 "--supernet", str(oneshot_run / "supernet.pt")]) == 0
    before = [r for r in rows(oneshot_run) if r["phase"] == "search"]
    after = [r for r in rows(out) if r["phase"] == "search"]
    assert [r["epoch"] for r in after] == [0, 1] and "supernet_loss" not in after[0]
    assert {k: v for k, v in after[0].items() if k not in ("epoch", "seconds", "time")} == \
        {k: v for k, v in before[2].items() if k not in ("epoch", "seconds", "time")}
    assert not (out / "supernet.pt").exists()

    target = 0.6e6
    spec = reuse_spec(cache_dir, cost__loss={"form": "budget", "target": target})
    small = tmp_path / "small"
    assert main(["run", str(write(tmp_path, spec, "small.yaml")), "--out", str(small),
                 "--supernet", str(oneshot_run / "supernet.pt")]) == 0
    evolution = [r for r in rows(small) if r["phase"] == "search"][0]
    assert evolution["proposed"] == 12 and evolution["cost"] <= target


@pytest.mark.parametrize("change, field", [({"space__width": 0.5}, "space.width"),
                                           ({"space__input_size": 64}, "space.input_size"),
                                           ({"dataset__num_train": 48}, "dataset.num_train")])
def test_a_supernet_of_another_space_or_data_is_refused(oneshot_run, tmp_path, cache_dir, capsys, monkeypatch,
                                                        change, field):
    """Exit 2 naming the field that differs, before the data is built: nothing written, no dataset generated into
    the cache, no default runs/ folder made."""
    spec = reuse_spec(cache_dir, **change)
    if "space__input_size" in change:
        spec["dataset"] = {**spec["dataset"], "image_size": 64}
    path = write(tmp_path, spec)
    cached = sorted(cache_dir.iterdir())
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(path), "--supernet", str(oneshot_run / "supernet.pt")]) == 2
    assert field in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and sorted(cache_dir.iterdir()) == cached


def test_a_supernet_of_another_space_is_refused_naming_the_space(oneshot_run, tmp_path, cache_dir, capsys):
    spec = reuse_spec(cache_dir)
    spec["space"] = {"name": "fbnetv2", "input_size": 32, "width": 0.25}
    out = tmp_path / "run"
    assert main(["run", str(write(tmp_path, spec)), "--out", str(out),
                 "--supernet", str(oneshot_run / "supernet.pt")]) == 2
    assert "space.name = 'fbnet'; the spec has 'fbnetv2'" in capsys.readouterr().err
    assert not out.exists()


def test_a_supernet_is_reused_with_its_data_kept_in_another_folder(oneshot_run, tmp_path, cache_dir):
    """Where the data is cached is not what it is: the same evolution as the run that trained the supernet."""
    spec = reuse_spec(cache_dir, dataset__cache_dir=str(tmp_path / "elsewhere"))
    out = tmp_path / "run"
    assert main(["run", str(write(tmp_path, spec)), "--out", str(out),
                 "--supernet", str(oneshot_run / "supernet.pt")]) == 0
    before = [r for r in rows(oneshot_run) if r["phase"] == "search"][2]
    after = [r for r in rows(out) if r["phase"] == "search"][0]
    assert {k: v for k, v in after.items() if k not in ("epoch", "seconds", "time")} == \
        {k: v for k, v in before.items() if k not in ("epoch", "seconds", "time")}


def test_a_reused_supernet_answers_another_devices_latency_table(oneshot_run, tmp_path, cache_dir):
    """One supernet, another device: its latency table (``nascore lut build``) and a budget in ms between the space's
    cheapest and dearest archs on it: no supernet epoch, and the found arch within the budget, as the table prices
    it."""
    from nascore.costs.latency import LatencyCost

    spec = reuse_spec(cache_dir)
    lut = tmp_path / "device.lut.json"
    spec["cost"] = {"name": "latency", "lut": str(lut), "min_run_time": 0.005}
    assert main(["lut", "build", str(write(tmp_path, spec, "lut.yaml"))]) == 0
    run = build_run(validate_spec(spec), tmp_path / "unused", False)
    table = run.parts.space.supernet().price(LatencyCost({"lut": str(lut), "min_run_time": 0.005}), 32)
    low, high = table.bounds()
    target = low + 0.5 * (high - low)
    spec["cost"]["loss"] = {"form": "budget", "target": target}
    out = tmp_path / "run"
    assert main(["run", str(write(tmp_path, spec)), "--out", str(out), "--supernet",
                 str(oneshot_run / "supernet.pt")]) == 0
    evolution = [r for r in rows(out) if r["phase"] == "search"][0]
    assert "supernet_loss" not in evolution and low <= evolution["cost"] <= target
    found = json.loads((out / "arch.json").read_text())["choices"]
    assert table.of_choices(found) <= target


def test_training_an_arch_of_a_reuse_run_does_not_need_its_supernet(oneshot_run, tmp_path, cache_dir):
    """The supernet file is a search's input: ``nascore train`` with the spec of a run that reused one (and the
    trainings inside such a run) do not read it, so it may be gone."""
    kept = tmp_path / "supernet.pt"
    shutil.copy(oneshot_run / "supernet.pt", kept)
    out = tmp_path / "reuse"
    assert main(["run", str(write(tmp_path, reuse_spec(cache_dir))), "--out", str(out), "--supernet", str(kept)]) == 0
    kept.unlink()
    assert main(["train", str(out / "arch.json"), "--spec", str(out / "spec.yaml"), "--out", str(tmp_path / "t")]) == 0


def test_oneshot_is_listed_described_and_reported(oneshot_run, tmp_path, capsys):
    """``nascore plugins`` lists the strategy, ``nascore schema`` describes its options (every one-shot rule), and
    ``nascore report`` renders its run: its phases, its found arch."""
    from nascore.performance.oneshot import RULES

    capsys.readouterr()
    assert main(["plugins"]) == 0
    assert any(line.split()[:2] == ["strategy", "oneshot"] and "ok" in line.split()
               for line in capsys.readouterr().out.splitlines())
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    text = json.dumps(schema)
    assert '"oneshot"' in text and all(f'"{rule}"' in text for rule in RULES)
    run = tmp_path / "run"
    shutil.copytree(oneshot_run, run)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "search: 4 epochs" in page and "name: oneshot" in page and "(arch.json)" in page
    assert all(f"<td>{choice}</td>" in page for choice in json.loads((run / "arch.json").read_text())["choices"].values())


def test_supernet_is_refused_for_a_strategy_that_trains_none(oneshot_run, tmp_path, cache_dir, capsys):
    spec = standalone_spec(cache_dir, {"name": "random", "archs": 1})
    out = tmp_path / "run"
    assert main(["run", str(write(tmp_path, spec)), "--out", str(out),
                 "--supernet", str(oneshot_run / "supernet.pt")]) == 2
    assert "strategy.supernet_file" in capsys.readouterr().err
    assert not out.exists()


def test_a_file_that_is_not_a_supernet_is_refused(oneshot_run, tmp_path, cache_dir, capsys):
    """Another torch file (the run's trained model) and a FIFO: exit 2, the file named."""
    spec = write(tmp_path, reuse_spec(cache_dir))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for bad in (oneshot_run / "train_model.pt", fifo):
        assert main(["run", str(spec), "--out", str(tmp_path / "run"), "--supernet", str(bad)]) == 2
        assert str(bad) in capsys.readouterr().err
        assert not (tmp_path / "run").exists()

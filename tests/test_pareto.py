"""The Pareto step: the front on hand-made points, DNAS.sample, the `pareto:` block, and a small search that
writes pareto.csv and pareto.png (and writes them again when resumed before they were written)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import ClassVar

import matplotlib.image
import pytest
import torch
import yaml

from nascore.arch import Arch
from nascore.costs.flops import FlopsCost, count_macs
from nascore.pareto import CSV_FILE, PLOT_FILE, candidates, pareto_front, run_pareto
from nascore.parts import Parts
from nascore.progress import Reporter
from nascore.run import run_spec
from nascore.rundir import open_run
from nascore.spaces.fbnet import FBNetSpace
from nascore.spec import load_spec, spec_json_schema, validate_spec
from nascore.spec_model import ParetoConfig
from nascore.strategies.dnas import DNAS
from nascore.strategy import SHARED, SearchContext, SearchStrategy
from nascore.task import build_network
from nascore.tasks.classification import Classification
from nascore.tasks.datasets import DigitScenes

SPACE = {"name": "fbnet", "width": 0.25, "input_size": 32, "head_channels": 64}


# -- the front -----------------------------------------------------------------------------------------
POINTS = [(1.0, 0.5), (2.0, 0.7), (2.0, 0.6), (3.0, 0.7), (1.0, 0.5), (0.5, 0.1)]


def test_front_higher_is_better_with_ties():
    # (2, 0.6) loses to (2, 0.7) on the metric alone, (3, 0.7) to it on cost alone; the two equal
    # (1, 0.5) points do not dominate each other
    assert pareto_front(POINTS) == [True, True, False, False, True, True]


def test_front_lower_is_better():
    points = [(1.0, 0.3), (2.0, 0.2), (2.0, 0.25), (3.0, 0.2), (0.5, 0.4)]
    assert pareto_front(points, higher_is_better=False) == [True, True, False, False, True]
    # the same points read as higher-is-better: (0.5, 0.4) is cheapest and best
    assert pareto_front(points, higher_is_better=True) == [False, False, False, False, True]
    assert pareto_front(POINTS, higher_is_better=False) == [False, False, False, False, False, True]


def test_front_edge_cases():
    assert pareto_front([]) == []
    assert pareto_front([(5.0, 0.0)]) == [True]
    assert pareto_front([(1.0, 0.2), (1.0, 0.2)], higher_is_better=False) == [True, True]


def test_candidates_put_the_derived_arch_first_and_drop_repeats():
    a, b, c = {"x": "a"}, {"x": "b"}, {"x": "c"}
    listed = candidates({SHARED: a}, {SHARED: [a, b, b, c, a]})
    assert listed == {SHARED: [("derived", a), ("sample_2", b), ("sample_4", c)]}
    assert candidates({"seg": a}, {"seg": []}) == {"seg": [("derived", a)]}


def test_tasks_rank_higher_metrics_first_by_default():
    assert Classification.higher_is_better is True


# -- DNAS.sample --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("digits")


@pytest.fixture(scope="module")
def data(cache):
    return DigitScenes({"image_size": 32, "num_train": 24, "num_val": 8, "num_test": 1, "cache_dir": str(cache)})


def make_ctx(data) -> tuple[SearchContext, FBNetSpace]:
    torch.manual_seed(0)
    space = FBNetSpace({k: v for k, v in SPACE.items() if k != "name"})
    supernet = space.supernet()
    tasks = [Classification()]
    network = build_network(supernet, tasks, data.info())
    parts = Parts(torch.device("cpu"), data, data.info(), data.split("train"), data.split("val"), tasks, space, 0)
    return SearchContext(parts, network, supernet), space


@pytest.fixture(scope="module")
def dnas(data) -> DNAS:
    strategy = DNAS({"epochs": 2, "warmup_epochs": 1, "batch_size": 8, "max_steps": 1})
    strategy.setup(make_ctx(data)[0])
    return strategy


def test_dnas_sample_is_deterministic_given_the_generator(dnas):
    with torch.no_grad():
        for t in dnas.theta.values():
            t.copy_(torch.randn(t.shape, generator=torch.Generator().manual_seed(1)))
    first = dnas.sample(12, torch.Generator().manual_seed(5))
    assert list(first) == [SHARED] and len(first[SHARED]) == 12
    assert first == dnas.sample(12, torch.Generator().manual_seed(5))
    assert first != dnas.sample(12, torch.Generator().manual_seed(6))
    options = {d.name: d.options for d in dnas.decisions}
    assert all(set(arch) == set(options) and all(arch[k] in options[k] for k in arch) for arch in first[SHARED])
    assert dnas.sample(0, torch.Generator()) == {SHARED: []}


def test_dnas_sample_follows_theta(dnas):
    with torch.no_grad():
        for t in dnas.theta.values():
            t.zero_()
        dnas.theta["layer04"][8] = 100.0  # 'skip' all but surely
        dnas.theta["layer07"][[2, 5]] = 60.0  # two options share all the mass
    archs = dnas.sample(64, torch.Generator().manual_seed(0))[SHARED]
    assert all(a["layer04"] == "skip" for a in archs)
    options = next(d.options for d in dnas.decisions if d.name == "layer07")
    assert {a["layer07"] for a in archs} == {options[2], options[5]}
    assert len({a["layer01"] for a in archs}) > 4  # uniform logits: many options turn up


def test_strategy_without_sample_skips_the_step_with_a_note(data, tmp_path):
    class Fixed(SearchStrategy):
        name: ClassVar[str] = "fixed"

        def run_epoch(self, epoch):
            return {}

        def derive(self):
            return {SHARED: {}}

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    ctx, space = make_ctx(data)
    notes: list[str] = []
    assert run_pareto(ctx, space, 3, Fixed(), {SHARED: {}}, ParetoConfig(), tmp_path, notes.append) is None
    assert notes == ["pareto: skipped: strategy 'fixed' neither samples archs from a search distribution nor "
                     "trains them (it is not a nascore.Sampling or nascore.Evaluating)"]
    assert list(tmp_path.iterdir()) == []


# -- the `pareto:` block ------------------------------------------------------------------------------
def small_spec(cache: Path, **changes) -> dict:
    spec = {"seed": 1,
            "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 40, "num_val": 12, "num_test": 1,
                        "cache_dir": str(cache)},
            "tasks": [{"name": "classification"}],
            "space": SPACE,
            "strategy": {"name": "dnas", "epochs": 2, "warmup_epochs": 1, "batch_size": 8, "max_steps": 1,
                         "bn_batches": 1},
            "cost": {"name": "flops"},
            "pareto": {"samples": 4, "bn_batches": 1, "batch_size": 16}}
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not None}


def test_pareto_block_defaults_dump_and_schema(cache):
    spec = validate_spec(small_spec(cache, pareto=None))
    assert spec.pareto == ParetoConfig(samples=8, bn_batches=4, batch_size=64)
    dumped = spec.dump()
    assert dumped["pareto"] == {"samples": 8, "bn_batches": 4, "batch_size": 64}
    again = validate_spec(yaml.safe_load(yaml.safe_dump(dumped)))
    assert again.dump() == dumped
    assert validate_spec(small_spec(cache, pareto={"samples": 0})).pareto.samples == 0
    schema = spec_json_schema()
    pareto = schema["$defs"][schema["properties"]["pareto"]["$ref"].rsplit("/", 1)[1]]
    assert pareto["additionalProperties"] is False
    assert {k: (v["default"], v.get("minimum")) for k, v in pareto["properties"].items()} == {
        "samples": (8, 0), "bn_batches": (4, 1), "batch_size": (64, 1)}


@pytest.mark.parametrize("pareto, expected", [
    ({"samples": -1}, "pareto.samples: Input should be greater than or equal to 0"),
    ({"bn_batches": 0}, "pareto.bn_batches: Input should be greater than or equal to 1"),
    ({"batch_size": "big"}, "pareto.batch_size: Input should be a valid integer"),
    ({"sample": 3}, "pareto.sample: unknown field; expected one of: samples, bn_batches, batch_size. "
                    "Did you mean 'samples'?"),
    (8, "pareto: expected a mapping of fields, got int 8"),
])
def test_bad_pareto_block(cache, tmp_path, pareto, expected):
    from nascore.errors import SpecError

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(small_spec(cache, pareto=pareto)))
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert len(exc.value.errors) == 1 and exc.value.errors[0].startswith(expected), exc.value.errors


# -- a small search -----------------------------------------------------------------------------------
def search(cache: Path, out: Path, resume: bool = False, **changes) -> dict:
    spec = validate_spec(small_spec(cache, **changes))
    return run_spec(open_run(spec, out, resume=resume, reporter=Reporter(quiet=True)))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def searched(cache, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "run"
    return out, search(cache, out)


def test_search_writes_pareto_csv(searched):
    out, summary = searched
    rows = read_csv(out / CSV_FILE)
    assert list(rows[0]) == ["owner", "arch", "cost", "measured", "unit", "val/classification/top1",
                             "val/classification/loss", "on_front", "choices"]
    names = [r["arch"] for r in rows]
    assert names[0] == "derived" and 2 <= len(rows) <= 5
    assert set(names[1:]) <= {f"sample_{i}" for i in range(1, 5)}
    arch = Arch.load(out / "arch.json")
    assert json.loads(rows[0]["choices"]) == arch.choices
    assert len({r["choices"] for r in rows}) == len(rows)  # no arch twice

    space = FBNetSpace(arch.config)
    supernet = space.supernet()
    table = supernet.price(FlopsCost(), 32)
    for r in rows:
        choices = json.loads(r["choices"])
        assert r["owner"] == "shared" and r["unit"] == "MACs"
        assert float(r["cost"]) == table.of_choices(choices)
        built = space.build(Arch(space="fbnet", config=arch.config, choices=choices))
        assert float(r["measured"]) == count_macs(built, torch.zeros(1, 3, 32, 32))
        assert 0 <= float(r["val/classification/top1"]) <= 1 and float(r["val/classification/loss"]) > 0
    front = pareto_front([(float(r["cost"]), float(r["val/classification/top1"])) for r in rows])
    assert [r["on_front"] for r in rows] == [str(int(f)) for f in front]
    assert summary["pareto"] == {"archs": len(rows), "on_front": sum(front), "files": [CSV_FILE, PLOT_FILE]}


def test_search_writes_a_png_plot(searched):
    out, _ = searched
    path = out / PLOT_FILE
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_resume_writes_what_a_kill_before_the_pareto_step_lost(searched, cache):
    out, summary = searched
    csv_text = (out / CSV_FILE).read_text()
    metrics = (out / "metrics.jsonl").read_text()
    (out / CSV_FILE).unlink()
    (out / PLOT_FILE).unlink()
    again = search(cache, out, resume=True)
    assert (out / CSV_FILE).read_text() == csv_text and (out / PLOT_FILE).is_file()
    assert (out / "metrics.jsonl").read_text() == metrics  # the search itself was not redone
    assert again == summary


def test_without_a_cost_block_the_step_counts_multiply_adds(cache, tmp_path):
    search(cache, tmp_path / "run", cost=None, strategy={"name": "dnas", "epochs": 1, "warmup_epochs": 0,
                                                          "batch_size": 8, "max_steps": 1, "bn_batches": 1},
           pareto={"samples": 1, "bn_batches": 1, "batch_size": 16})
    rows = read_csv(tmp_path / "run" / CSV_FILE)
    assert rows and all(r["unit"] == "MACs" and r["cost"] == r["measured"] and float(r["cost"]) > 0 for r in rows)


def test_no_samples_no_pareto_step(cache, tmp_path):
    summary = search(cache, tmp_path / "run", pareto={"samples": 0},
                     strategy={"name": "dnas", "epochs": 1, "warmup_epochs": 0, "batch_size": 8, "max_steps": 1})
    assert "pareto" not in summary
    assert not (tmp_path / "run" / CSV_FILE).exists() and not (tmp_path / "run" / PLOT_FILE).exists()

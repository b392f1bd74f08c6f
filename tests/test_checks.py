"""What plugins hand back is checked where nascore takes it (``nascore.checks``): a strategy whose method returns
the wrong thing stops the run with exit status 2 and a message naming the strategy, its distribution and the
method, and nothing invalid is written (no arch file, no checkpoint that only ``--resume`` would refuse). The
faulty components come from a throwaway distribution installed with pip, as a plugin author's would."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from nascore import checks
from nascore.cli import main
from nascore.errors import NascoreError
from nascore.strategy import SearchStrategy
from nascore.supernet import Decision
from plugin_code import importable, install_distribution

DIST = "nascore-testplugin-faulty"
PKG = "nascore_testplugin_faulty"
WHO = f"strategy 'faulty' (class Faulty, distribution '{DIST}')"

FAULTY = '''
    """A strategy and a cost model that hand back what their config's ``fault`` says."""
    from dataclasses import dataclass
    from typing import ClassVar, Literal

    import torch

    import nascore
    from nascore import hookimpl


    @dataclass
    class Memo:
        """Not a tensor, number or text: no checkpoint loaded with weights_only can hold it."""
        note: str


    class Faulty(nascore.SearchStrategy, nascore.Sampling):
        name: ClassVar[str] = "faulty"

        class Config(nascore.ComponentConfig):
            epochs: int = 2
            fault: Literal["none", "float-row", "tensor-row", "epoch-key", "unknown-option", "unknown-decision",
                           "missing-decision", "unknown-owner", "list-arch", "object-state", "bad-sample"] = "none"

        def setup(self, ctx):
            super().setup(ctx)
            self.decisions = ctx.supernet.decisions()

        def run_epoch(self, epoch):
            fault = self.config.fault
            if fault == "float-row":
                return 0.5
            if fault == "tensor-row":
                return {"loss": 0.5, "top_choices": {"layer01": torch.tensor(1.0)}}
            if fault == "epoch-key":
                return {"epoch": epoch}
            return {"loss": 0.5, "top_choices": self._first()}

        def _first(self):
            return {d.name: d.options[0] for d in self.decisions}

        def derive(self):
            fault, arch = self.config.fault, self._first()
            if fault == "unknown-option":
                arch["layer01"] = "k9_e9"
            elif fault == "unknown-decision":
                arch["layer99"] = "skip"
            elif fault == "missing-decision":
                del arch["layer03"]
            elif fault == "unknown-owner":
                return {"segmentation": arch}
            elif fault == "list-arch":
                return [arch]
            return {nascore.SHARED: arch}

        def sample(self, n, generator):
            if self.config.fault == "bad-sample":
                return {nascore.SHARED: [{**self._first(), "layer02": "k7"}]}
            return {nascore.SHARED: [self._first()] * n}

        def state_dict(self):
            state = {"seen": torch.zeros(3), "names": ["a", ("b", 1)]}
            if self.config.fault == "object-state":
                state["memo"] = Memo("kept")
            return state

        def load_state_dict(self, state):
            pass


    class FaultyCost(nascore.CostModel):
        name: ClassVar[str] = "faulty-cost"
        unit: ClassVar[str] = "units"

        class Config(nascore.ComponentConfig):
            fault: Literal["nan", "text"] = "nan"

        def measure(self, module, input_shape):
            return float("nan") if self.config.fault == "nan" else "cheap"


    @hookimpl
    def nascore_search_strategies():
        return [Faulty]


    @hookimpl
    def nascore_cost_models():
        return [FaultyCost]
'''


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    site = install_distribution(tmp_path_factory.mktemp("faulty"), DIST, PKG, {"faulty": FAULTY},
                                {"faulty": "faulty"})
    with importable(site, [PKG]):
        yield


def _run(tmp_path: Path, cache_dir: Path, fault: str, **extra) -> tuple[int, Path]:
    spec = {"seed": 0,
            "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 16, "num_val": 8, "num_test": 8,
                        "cache_dir": str(cache_dir)},
            "tasks": [{"name": "classification"}],
            "space": {"name": "fbnet", "width": 0.25, "input_size": 32, "head_channels": 64},
            "strategy": {"name": "faulty", "fault": fault}, "pareto": {"samples": 0}, **extra}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    return main(["run", str(path), "--out", str(out)]), out


def test_a_well_behaved_strategy_runs(faulty, tmp_path, cache_dir):
    code, out = _run(tmp_path, cache_dir, "none", pareto={"samples": 2})
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and rows[0]["top_choices"]["layer01"] == "k3_e1"
    assert (out / "arch.json").exists() and (out / "checkpoints" / "search.pt").exists()


@pytest.mark.parametrize("fault, message", [
    ("float-row", "run_epoch() returned a float; expected a dict of metric name -> value, one row of metrics.jsonl"),
    ("tensor-row", "run_epoch() returned a Tensor for 'top_choices'.layer01 (a tensor's .item() is its number); "
                   "expected a number, text, bool or null, or a list or dict of them"),
    ("epoch-key", "run_epoch() returned key 'epoch', which nascore sets itself in every row (phase, epoch)"),
    ("object-state", "state_dict() returned a state no checkpoint can hold: a "
                     f"{PKG}.faulty.Memo at state['memo']; a checkpoint holds tensors, numbers, text, bool, None"),
])
def test_a_bad_epoch_stops_the_run_before_its_row_and_checkpoint(faulty, tmp_path, cache_dir, capsys, fault, message):
    code, out = _run(tmp_path, cache_dir, fault)
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"error: {WHO}: {message}" in err and "Traceback" not in err
    # the first epoch failed: nothing but the spec was written, and the new directory is gone again
    assert not out.exists()


@pytest.mark.parametrize("fault, message", [
    ("unknown-option", "derive() returned option 'k9_e9' for decision 'layer01'; expected one of k3_e1, k3_e1_g2, "),
    ("unknown-decision", "derive() returned decision 'layer99' for owner nascore.SHARED, which the supernet does "
                         "not have (its decisions: layer01, layer02, "),
    ("missing-decision", "derive() returned no option for decision layer03 in the arch of owner nascore.SHARED, "
                         "which chooses it"),
    ("unknown-owner", "derive() returned owner 'segmentation'; expected nascore.SHARED (None) or a task of the run "
                      "(classification)"),
    ("list-arch", "derive() returned a list; expected a dict owner -> choices"),
])
def test_a_bad_derived_arch_is_refused_before_an_arch_file_is_written(faulty, tmp_path, cache_dir, capsys, fault,
                                                                      message):
    code, out = _run(tmp_path, cache_dir, fault)
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"error: {WHO}: {message}" in err and "Traceback" not in err
    assert not (out / "arch.json").exists() and not (out / "summary.json").exists()
    # the search's epochs, checkpointed as they ended, are intact: --resume works once the plugin is fixed
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert torch.load(out / "checkpoints" / "search.pt", weights_only=True)["epoch"] == 1


def test_a_bad_sampled_arch_is_refused_before_the_pareto_files(faulty, tmp_path, cache_dir, capsys):
    code, out = _run(tmp_path, cache_dir, "bad-sample", pareto={"samples": 2})
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"error: {WHO}: sample() returned option 'k7' for decision 'layer02'; expected one of " in err
    assert not (out / "pareto.csv").exists() and not (out / "pareto.png").exists()


@pytest.mark.parametrize("fault, message", [
    ("nan", "measure() returned nan; expected a finite number"),
    ("text", "measure() returned a str; expected a number (the price, in units)"),
])
def test_a_cost_models_bad_price_names_it(faulty, tmp_path, cache_dir, capsys, fault, message):
    code, out = _run(tmp_path, cache_dir, "none", cost={"name": "faulty-cost", "fault": fault})
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"error: cost 'faulty-cost' (class FaultyCost, distribution '{DIST}'): {message}" in err
    assert not out.exists()


# -- the checks as functions ------------------------------------------------------------------------------------
class Plain(SearchStrategy):
    """A strategy that is never run: what the checks name."""

    name = "plain"

    def run_epoch(self, epoch):
        return {}

    def derive(self):
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


DECISIONS = [Decision("a", ("x", "y")), Decision("b", ("x", "y"), task="depth"), Decision("c", ("x",), task="seg")]


def test_a_component_no_plugin_registered_is_named_without_a_distribution():
    assert checks.who(Plain()) == "strategy 'plain' (class Plain)"


def test_metrics_rows_are_json_values():
    row = {"loss": 1.5, "n": 3, "ok": True, "best": "arch_3", "none": None, "top_choices": {"a": "x"},
           "per_task": [1.0, 2.0], "float64": torch.tensor(2.0).double().numpy().item()}
    assert checks.metrics_row(row, Plain(), "run_epoch") == row
    for bad, problem in [({1: 2.0}, "returned key 1 (int); expected text keys"),
                         ({"x": {"y": object()}}, "returned a object for 'x'.y; expected a number, text"),
                         ({"phase": "search"}, "returned key 'phase', which nascore sets itself")]:
        with pytest.raises(NascoreError) as exc:
            checks.metrics_row(bad, Plain(), "run_epoch")
        assert str(exc.value).startswith(f"strategy 'plain' (class Plain): run_epoch() {problem}")


def test_derived_archs_cover_what_their_owner_chooses():
    ok = {"depth": {"a": "x", "b": "y"}, "seg": {"a": "y", "c": "x"}}
    assert checks.derived(ok, DECISIONS, ["depth", "seg"], Plain()) == ok
    assert checks.derived({None: {"a": "x", "b": "x", "c": "x"}}, DECISIONS, ["depth", "seg"], Plain())
    for bad, problem in [({None: {"a": "x", "b": "x"}}, "no option for decision c in the arch of owner "
                                                        "nascore.SHARED"),
                         ({"depth": {"a": "x"}}, "no option for decision b in the arch of owner 'depth'"),
                         ({}, "returned no arch"),
                         ({"depth": "x"}, "returned a str as the choices of owner 'depth'")]:
        with pytest.raises(NascoreError) as exc:
            checks.derived(bad, DECISIONS, ["depth", "seg"], Plain())
        assert problem in str(exc.value)


def test_a_checkpoint_state_is_what_weights_only_loads():
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 2)).sum().backward()
    opt.step()
    state = {"opt": opt.state_dict(), "gen": torch.Generator().get_state(), "theta": net.weight,
             "shape": torch.Size([2]), "dtype": torch.float16, "pairs": [("a", 1.0)], "nested": {3: None}}
    assert checks.checkpoint_state(state, Plain()) is state
    with pytest.raises(NascoreError, match=r"state\['fn'\]") as exc:
        checks.checkpoint_state({"fn": lambda: 0}, Plain())
    assert str(exc.value).startswith("strategy 'plain' (class Plain): state_dict() returned a state no checkpoint")
    with pytest.raises(NascoreError, match=r"state_dict\(\) returned a list; expected a dict"):
        checks.checkpoint_state([1], Plain())


def test_prices_are_finite_numbers():
    from nascore.costs.flops import FlopsCost

    assert checks.price(torch.tensor([3.0]), FlopsCost(), "measure") == 3.0 and checks.price(2, FlopsCost(), "m") == 2.0
    for bad in (math.inf, None, True, torch.ones(2)):
        with pytest.raises(NascoreError, match=r"^cost 'flops' \(class FlopsCost, distribution 'nascore'\): m\(\) "):
            checks.price(bad, FlopsCost(), "m")

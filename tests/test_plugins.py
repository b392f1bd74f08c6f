"""The plugin host: entry points, component hooks, broken plugins, lifecycle hooks.

External registration is proven with a real throwaway distribution built from a pyproject.toml and
installed with pip (``--target`` a temporary site directory that is put on ``sys.path`` and
``PYTHONPATH``): entry points are then found by ``importlib.metadata`` exactly as for a plugin installed
into the environment, and nothing is left in the shared virtual environment if the session dies.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

import nascore
from installed import builtin_registry
from nascore.errors import NascoreError, SpecError
from nascore.registry import Registry, Source
from nascore.spec import validate_spec
from plugin_code import DEPTH_TASK, importable, install_distribution, module_from_code

DIST = "nascore-testplugin-throwaway"
PKG = "nascore_testplugin_throwaway"

#: entry point name -> module source; one distribution, several plugins (good and broken)
MODULES = {
    "good": '''
        """A real random-sampling search strategy and a params-only cost model."""
        from typing import ClassVar

        import torch
        from pydantic import Field
        from torch.utils.data import DataLoader

        import nascore
        from nascore import hookimpl


        class RandomSampling(nascore.SearchStrategy):
            """Trains the supernet along uniformly sampled one-hot paths; keeps the sampled arch with the
            lowest validation loss."""

            name: ClassVar[str] = "random-sampling"

            class Config(nascore.ComponentConfig):
                epochs: int = Field(1, ge=1)
                batch_size: int = Field(16, ge=1)
                lr: float = Field(0.05, gt=0)
                samples: int = Field(4, ge=1, description="archs scored on a validation batch per epoch")
                max_steps: int | None = Field(None, ge=1)

            def setup(self, ctx):
                super().setup(ctx)
                self.decisions = ctx.supernet.decisions()
                self.gen = torch.Generator().manual_seed(ctx.parts.seed)
                self.opt = torch.optim.SGD(ctx.network.parameters(), lr=self.config.lr, momentum=0.9)
                self.best = None  # [val loss, choices]

            def _sample(self):
                return {d.name: d.options[int(torch.randint(len(d.options), (1,), generator=self.gen))]
                        for d in self.decisions}

            def _loss(self, images, targets):
                device = self.ctx.parts.device
                targets = {k: v.to(device) if torch.is_tensor(v) else v for k, v in targets.items()}
                outputs = self.ctx.network(images.to(device))
                return sum(t.loss(outputs[t.name], targets) for t in self.ctx.parts.tasks)

            def run_epoch(self, epoch):
                ctx, cfg = self.ctx, self.config
                ctx.network.train()
                batches = DataLoader(ctx.parts.train_set, batch_size=cfg.batch_size, shuffle=True,
                                     collate_fn=ctx.parts.collate, generator=self.gen)
                total, steps = 0.0, 0
                for images, targets in batches:
                    if cfg.max_steps is not None and steps >= cfg.max_steps:
                        break
                    ctx.supernet.set_choices(self._sample())
                    loss = self._loss(images, targets)
                    self.opt.zero_grad()
                    loss.backward()
                    self.opt.step()
                    total, steps = total + float(loss.detach()), steps + 1
                ctx.network.eval()
                images, targets = next(iter(DataLoader(ctx.parts.val_set, batch_size=cfg.batch_size,
                                                       collate_fn=ctx.parts.collate)))
                with torch.no_grad():
                    for _ in range(cfg.samples):
                        choices = self._sample()
                        ctx.supernet.set_choices(choices)
                        val = float(self._loss(images, targets))
                        if self.best is None or val < self.best[0]:
                            self.best = [val, choices]
                return {"train_loss": total / max(steps, 1), "best_val_loss": self.best[0]}

            def derive(self):
                return {nascore.SHARED: dict(self.best[1])}

            def state_dict(self):
                return {"best": self.best, "gen": self.gen.get_state(), "opt": self.opt.state_dict()}

            def load_state_dict(self, state):
                self.best = state["best"]
                self.gen.set_state(state["gen"])
                self.opt.load_state_dict(state["opt"])


        class ParamsOnly(nascore.CostModel):
            """Prices an operation by its number of parameters."""

            name: ClassVar[str] = "params-only"
            unit: ClassVar[str] = "params"

            class Config(nascore.ComponentConfig):
                scale: float = Field(1.0, gt=0)

            def measure(self, module, input_shape):
                return self.config.scale * sum(p.numel() for p in module.parameters())


        @hookimpl
        def nascore_search_strategies():
            return [RandomSampling]


        @hookimpl
        def nascore_cost_models():
            return [ParamsOnly]
    ''',
    "observer": '''
        """A lifecycle observer: appends every hook call to <run dir>/observed.jsonl."""
        import json

        from nascore import hookimpl


        def _log(run, **row):
            with open(run.out_dir / "observed.jsonl", "a") as f:
                f.write(json.dumps(row) + "\\n")


        @hookimpl
        def nascore_run_start(run):
            _log(run, hook="run_start")


        @hookimpl
        def nascore_epoch_end(run, epoch, metrics):
            _log(run, hook="epoch_end", epoch=epoch, phase=metrics["phase"])


        @hookimpl
        def nascore_run_end(run, summary):
            _log(run, hook="run_end", archs=sorted(summary["archs"]))
    ''',
    "broken_import": '''
        import nascore_testplugin_missing_dependency  # noqa: F401  (not installed: ModuleNotFoundError)
    ''',
    "garbage": '''
        from nascore import hookimpl


        @hookimpl
        def nascore_search_spaces():
            return "fbnet-but-a-string"
    ''',
    "no_config": '''
        from typing import ClassVar

        import nascore
        from nascore import hookimpl


        class Depth(nascore.Task):
            name: ClassVar[str] = "depth-without-config"
            target: ClassVar[str] = "depth"
            Config = None


        @hookimpl
        def nascore_tasks():
            return [Depth]
    ''',
    "abstract": '''
        from typing import ClassVar

        import nascore
        from nascore import hookimpl


        class Depth(nascore.Task):
            """Forgets the loss and the metrics."""

            name: ClassVar[str] = "depth-half-done"
            target: ClassVar[str] = "depth"

            def build_head(self, feature_info, pre_logits, data):
                return None


        @hookimpl
        def nascore_tasks():
            return [Depth]
    ''',
    "raises": '''
        from nascore import hookimpl


        @hookimpl
        def nascore_cost_models():
            raise RuntimeError("latency table file lut.json not found")
    ''',
    "duplicate": '''
        from typing import ClassVar

        import nascore
        from nascore import hookimpl


        class OtherDigitScenes(nascore.Dataset):
            """Claims the name of a built-in dataset."""

            name: ClassVar[str] = "digit-scenes"

            def info(self):
                return nascore.DataInfo(3, 32, {"label": 10})

            def split(self, name):
                return []


        @hookimpl
        def nascore_datasets():
            return [OtherDigitScenes]
    ''',
    "frobnicate": '''
        from nascore import hookimpl


        @hookimpl
        def nascore_frobnicate():
            return 42
    ''',
    "undecorated": '''
        def nascore_cost_models():  # forgot @nascore.hookimpl
            return []
    ''',
}

#: entry point name (as in pyproject.toml) -> module
ENTRY_POINTS = {
    "good": "good", "observer": "observer", "broken-import": "broken_import", "garbage": "garbage",
    "no-config": "no_config", "abstract": "abstract", "raises": "raises", "duplicate": "duplicate",
    "frobnicate": "frobnicate", "undecorated": "undecorated",
}


def _ep(name: str) -> str:
    return f"{name} = {PKG}.{ENTRY_POINTS[name]}"


def _env(site: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("COLUMNS", None)  # the default width of a pipe (80): nothing may be cut off at it
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The throwaway distribution, built and installed with pip into a temporary site directory that
    this process (``sys.path``) and subprocesses (``PYTHONPATH``) see; removed afterwards."""
    target = install_distribution(tmp_path_factory.mktemp("throwaway"), DIST, PKG, MODULES, ENTRY_POINTS)
    with importable(target, [PKG]) as site:  # nothing cached from the throwaway outlives this module
        yield site


@pytest.fixture(scope="module")
def registry(site) -> Registry:
    return Registry.from_entry_points()


def _other_plugins(registry: Registry, kind: str) -> list[str]:
    """Names of ``kind`` that plugins installed in the environment (not nascore, not the throwaway) provide."""
    return [e.name for e in registry.entries[kind].values() if e.source.dist not in ("nascore", DIST)]


def _problems(registry: Registry, entry_point: str) -> list[str]:
    return [str(p) for p in registry.problems if p.source.dist == DIST and p.source.entry_point == _ep(entry_point)]


# -- built-ins are plugins ------------------------------------------------------------------------------
def test_builtins_register_through_the_nascore_distribution_entry_points():
    import importlib.metadata as md

    eps = {ep.name: ep.value for ep in md.distribution("nascore").entry_points if ep.group == "nascore"}
    assert {"fbnet", "dnas", "flops", "classification", "datasets"} <= set(eps)
    registry = Registry.from_entry_points()
    builtin = {(e.kind, e.name): e.source for e in registry.all_entries() if e.source.dist == "nascore"}
    for key in [("space", "fbnet"), ("strategy", "dnas"), ("cost", "flops"), ("task", "classification"),
                ("dataset", "digit-scenes"), ("dataset", "image-folder")]:
        assert key in builtin, key
    assert builtin[("dataset", "digit-scenes")].entry_point == f"datasets = {eps['datasets']}"
    assert not [p for p in registry.problems if p.source.dist == "nascore"]


# -- the throwaway distribution -------------------------------------------------------------------------
def test_external_components_are_found_with_their_distribution(registry):
    strategy = registry.entries["strategy"]["random-sampling"]
    cost = registry.entries["cost"]["params-only"]
    assert strategy.source == Source(DIST, _ep("good")) and cost.source == Source(DIST, _ep("good"))
    assert issubclass(registry.get("strategy", "random-sampling"), nascore.SearchStrategy)
    assert issubclass(registry.get("cost", "params-only"), nascore.CostModel)
    # the built-ins stay usable next to the broken plugins
    for kind, name in [("space", "fbnet"), ("strategy", "dnas"), ("cost", "flops"),
                       ("task", "classification"), ("dataset", "image-folder")]:
        assert registry.get(kind, name).name == name


@pytest.mark.parametrize("entry_point, expected", [
    ("broken-import", "failed to import: ModuleNotFoundError: No module named "
                      "'nascore_testplugin_missing_dependency'"),
    ("garbage", "hook nascore_search_spaces returned a str; expected a list of SearchSpace subclasses"),
    ("no-config", "hook nascore_tasks returned Depth without a pydantic 'Config'"),
    ("abstract", "hook nascore_tasks returned Depth, which does not implement loss, metrics"),
    ("raises", "hook nascore_cost_models raised RuntimeError: latency table file lut.json not found"),
    ("duplicate", "dataset name 'digit-scenes' is already provided by distribution 'nascore', entry point "
                  "'datasets = nascore.tasks.datasets'; neither can be used"),
    ("frobnicate", "implements unknown hook 'nascore_frobnicate' (known: nascore_cost_models, "),
    ("undecorated", "defines nascore_cost_models without the @nascore.hookimpl decorator"),
])
def test_broken_plugin_is_a_problem_naming_distribution_and_entry_point(registry, entry_point, expected):
    problems = _problems(registry, entry_point)
    assert len(problems) == 1, [str(p) for p in registry.problems]
    assert problems[0].startswith(f"distribution '{DIST}', entry point '{_ep(entry_point)}': ")
    assert expected in problems[0]


def test_good_plugins_have_no_problems(registry):
    assert _problems(registry, "good") == [] and _problems(registry, "observer") == []
    assert {p.source.entry_point for p in registry.problems if p.source.dist == DIST} == {
        _ep(n) for n in ENTRY_POINTS} - {_ep("good"), _ep("observer")}


def test_conflicting_name_is_an_error_naming_both_distributions(registry):
    with pytest.raises(NascoreError) as exc:
        registry.get("dataset", "digit-scenes")
    msg = str(exc.value)
    assert "dataset 'digit-scenes' is provided by several plugins" in msg
    assert "distribution 'nascore', entry point 'datasets = nascore.tasks.datasets'" in msg
    assert f"distribution '{DIST}', entry point '{_ep('duplicate')}'" in msg
    assert "digit-scenes" not in registry.names("dataset")
    # a spec naming it fails validation with that message
    with pytest.raises(SpecError) as exc:
        validate_spec({"dataset": {"name": "digit-scenes"}, "tasks": [{"name": "classification"}],
                       "space": {"name": "fbnet"}, "strategy": {"name": "dnas"}}, registry)
    assert exc.value.errors[0].startswith("dataset.name: dataset 'digit-scenes' is provided by several plugins")


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """A tiny image-folder dataset (digit-scenes is unusable while the throwaway claims its name)."""
    root = tmp_path_factory.mktemp("images")
    for split in ("train", "val"):
        for c, colour in enumerate(["red", "blue"]):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(4 if split == "train" else 2):
                Image.new("RGB", (36, 36), colour).save(folder / f"{i}.png")
    return root


def _external_spec(image_root: Path) -> dict:
    return {"seed": 1, "dataset": {"name": "image-folder", "root": str(image_root), "image_size": 32},
            "tasks": [{"name": "classification"}],
            "space": {"name": "fbnet", "width": 0.25, "input_size": 32, "head_channels": 32},
            "strategy": {"name": "random-sampling", "epochs": 1, "batch_size": 4, "max_steps": 1, "samples": 2},
            "cost": {"name": "params-only", "scale": 0.5}}


def test_spec_uses_external_components_by_name(registry, image_root):
    spec = validate_spec(_external_spec(image_root), registry)
    assert spec.strategy.cls.name == "random-sampling" and spec.strategy.config.samples == 2
    assert spec.cost.cls.name == "params-only" and spec.cost.config.scale == 0.5
    # their Configs validate the spec like the built-ins' do
    bad = _external_spec(image_root)
    bad["strategy"]["samples"] = 0
    bad["cost"]["scael"] = 1
    with pytest.raises(SpecError) as exc:
        validate_spec(bad, registry)
    assert "strategy.samples: Input should be greater than or equal to 1" in exc.value.errors
    assert any(e.startswith("cost.scael: unknown field") and "Did you mean 'scale'?" in e for e in exc.value.errors)
    # an unknown name lists the external strategy among the available ones
    bad = _external_spec(image_root)
    bad["strategy"]["name"] = "random-sampler"
    with pytest.raises(SpecError) as exc:
        validate_spec(bad, registry)
    available = ", ".join(sorted({*builtin_registry().names("strategy"), *_other_plugins(registry, "strategy"),
                                  "random-sampling"}))
    assert f"available: {available}. Did you mean 'random-sampling'?" in exc.value.errors[0]


def test_external_strategy_cost_and_observer_run_a_search(registry, image_root, tmp_path):
    """The external strategy searches, the external cost model prices, the external observer's lifecycle
    hooks are called: a team's pip-installed plugin works end to end."""
    from nascore.progress import Reporter
    from nascore.run import run_spec
    from nascore.rundir import open_run

    spec = validate_spec(_external_spec(image_root), registry)
    run = open_run(spec, tmp_path / "run", resume=False, registry=registry, reporter=Reporter(quiet=True))
    summary = run_spec(run)
    arch = json.loads((tmp_path / "run" / "arch.json").read_text())
    assert arch["space"] == "fbnet" and len(arch["choices"]) == 22
    assert summary["archs"]["shared"]["choices"] == arch["choices"]
    observed = [json.loads(line) for line in (tmp_path / "run" / "observed.jsonl").read_text().splitlines()]
    assert observed == [{"hook": "run_start"}, {"hook": "epoch_end", "epoch": 0, "phase": "search"},
                        {"hook": "run_end", "archs": ["shared"]}]


def test_nascore_plugins_command_lists_everything(site, registry):
    """The real command in a fresh interpreter: every component with its distribution, and the broken
    plugins with their errors; exit status 1, as some failed to load."""
    proc = subprocess.run([sys.executable, "-m", "nascore.cli", "plugins"], capture_output=True, text=True,
                          env=_env(site), timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    lines = out.splitlines()

    def row(*cells: str) -> bool:
        return any(all(c in line for c in cells) for line in lines)

    for kind, name in [("space", "fbnet"), ("strategy", "dnas"), ("cost", "flops"), ("task", "classification"),
                       ("dataset", "image-folder")]:
        assert row(kind, f" {name} ", " nascore ", " ok "), (kind, name, out)
    assert row("strategy", "random-sampling", DIST, " ok "), out
    assert row("cost", "params-only", DIST, " ok "), out
    assert row("dataset", "digit-scenes", " nascore ", "name conflict"), out
    assert row("dataset", "digit-scenes", DIST, "name conflict"), out
    # every broken plugin is shown with its distribution, entry point and error, in full
    others = [p for p in registry.problems if p.source.dist != DIST]  # plugins installed in the environment
    assert f"broken plugins ({8 + len(others)}):" in lines, [str(p) for p in others]
    for ep in ENTRY_POINTS:
        header = f"- distribution '{DIST}', entry point '{_ep(ep)}':"
        assert (header in lines) == (ep not in ("good", "observer")), (ep, out)
    errors = {lines[i - 1]: lines[i].strip() for i in range(1, len(lines)) if lines[i].startswith("    ")}
    assert errors[f"- distribution '{DIST}', entry point '{_ep('broken-import')}':"] == (
        "failed to import: ModuleNotFoundError: No module named 'nascore_testplugin_missing_dependency'")
    assert errors[f"- distribution '{DIST}', entry point '{_ep('raises')}':"] == (
        "hook nascore_cost_models raised RuntimeError: latency table file lut.json not found")
    assert errors[f"- distribution '{DIST}', entry point '{_ep('frobnicate')}':"].startswith(
        "implements unknown hook 'nascore_frobnicate'")
    assert "…" not in out


def test_nascore_plugins_exits_0_when_every_plugin_loads(monkeypatch, capsys):
    """A check for a plugin's CI: 0 with no broken plugin (here: the built-ins alone), 1 with one."""
    from nascore import registry as registry_module
    from nascore.cli import main

    clean = builtin_registry()
    monkeypatch.setattr(registry_module, "get_registry", lambda: clean)
    assert main(["plugins"]) == 0
    assert "broken plugins" not in capsys.readouterr().out
    clean.problems.append(registry_module.Problem(Source("nascore-broken", "broken = nascore_broken"), "failed"))
    assert main(["plugins"]) == 1
    assert "broken plugins (1):" in capsys.readouterr().out


# -- the registry as a unit -----------------------------------------------------------------------------
OBSERVER = '''
    from nascore import hookimpl

    calls = []

    @hookimpl
    def nascore_run_start(run):
        calls.append(("run_start", run))

    @hookimpl
    def nascore_epoch_end(run, epoch, metrics):
        calls.append(("epoch_end", epoch, metrics))

    @hookimpl
    def nascore_run_end(run, summary):
        calls.append(("run_end", summary))
'''


def test_lifecycle_hooks_are_called_on_registered_observers():
    registry = Registry()
    first, second = module_from_code("observer_a", OBSERVER), module_from_code("observer_b", OBSERVER)
    registry.register(first, Source("observer-dist", "a = observer_a"))
    registry.register(second, Source("observer-dist", "b = observer_b"))
    registry.collect()
    assert registry.problems == []
    run = object()
    registry.hook.nascore_run_start(run=run)
    registry.hook.nascore_epoch_end(run=run, epoch=3, metrics={"loss": 1.0})
    registry.hook.nascore_run_end(run=run, summary={"archs": {}})
    for mod in (first, second):
        assert mod.calls == [("run_start", run), ("epoch_end", 3, {"loss": 1.0}), ("run_end", {"archs": {}})]


def test_lifecycle_hook_that_raises_names_its_plugin():
    registry = Registry()
    registry.register(module_from_code("quiet", OBSERVER), Source("quiet-dist", "quiet = quiet"))
    registry.register(module_from_code("loud", '''
        from nascore import hookimpl

        @hookimpl
        def nascore_epoch_end(run, epoch, metrics):
            raise ValueError("disk full")
    '''), Source("loud-dist", "loud = loud"))
    with pytest.raises(NascoreError) as exc:
        registry.hook.nascore_epoch_end(run=None, epoch=0, metrics={})
    assert str(exc.value) == ("distribution 'loud-dist', entry point 'loud = loud': hook nascore_epoch_end raised "
                              "ValueError: disk full")
    assert isinstance(exc.value.__cause__, ValueError)


def test_lifecycle_hook_with_wrong_arguments_is_rejected_at_registration():
    registry = Registry()
    registry.register(module_from_code("wrongargs", '''
        from nascore import hookimpl

        @hookimpl
        def nascore_epoch_end(run, epoch, metrics, optimizer):
            pass
    '''), Source("wrong-dist", "wrong = wrongargs"))
    assert len(registry.problems) == 1
    problem = str(registry.problems[0])
    assert problem.startswith("distribution 'wrong-dist', entry point 'wrong = wrongargs': invalid hook")
    assert "optimizer" in problem


def test_collect_is_idempotent_and_picks_up_later_plugins():
    """Registering one more plugin after collect() must not turn every earlier component into a conflict."""
    registry = builtin_registry()
    before = {(e.kind, e.name) for e in registry.all_entries()}
    problems = list(registry.problems)
    registry.register(module_from_code("extra_task", DEPTH_TASK), Source("depth-dist", "depth = extra_task"))
    registry.collect()
    registry.collect()
    assert registry.conflicts == {}
    assert registry.problems == problems
    assert {(e.kind, e.name) for e in registry.all_entries()} == before | {("task", "depth")}
    assert registry.entries["task"]["depth"].source == Source("depth-dist", "depth = extra_task")


def test_same_module_under_two_entry_points_is_a_problem_not_a_crash():
    registry = Registry()
    mod = module_from_code("twice", OBSERVER)
    registry.register(mod, Source("twice-dist", "one = twice"))
    registry.register(mod, Source("twice-dist", "two = twice"))
    assert [str(p) for p in registry.problems] == [
        str(p) for p in registry.problems if p.source == Source("twice-dist", "two = twice")]
    assert "cannot be registered" in str(registry.problems[0])


# -- a third-party plugin installed next to nascore ---------------------------------------------------------
EXTRA_DIST, EXTRA_PKG = "nascore-testplugin-everykind", "nascore_testplugin_everykind"

EXTRA_MODULES = {
    "extra": '''
        """One component of every kind, and a named arch, under names no built-in suggestion is close to."""
        from typing import ClassVar

        from nascore import hookimpl
        from nascore.costs.flops import FlopsCost
        from nascore.performance.predictors.baselines import MacsBaseline
        from nascore.spaces.fbnet import FBNetSpace
        from nascore.strategies.dnas import DNAS
        from nascore.tasks.classification import Classification
        from nascore.tasks.datasets import DigitScenes


        class ExtraSpace(FBNetSpace):
            name: ClassVar[str] = "extra-space"

            @classmethod
            def named_archs(cls):
                arch = FBNetSpace.named_archs()["fbnet_a"]
                return {"extra_arch": arch.model_copy(update={"space": cls.name, "name": "extra_arch"})}


        class ExtraStrategy(DNAS):
            name: ClassVar[str] = "extra-strategy"


        class ExtraCost(FlopsCost):
            name: ClassVar[str] = "extra-cost"


        class ExtraTask(Classification):
            name: ClassVar[str] = "extra-task"


        class ExtraDataset(DigitScenes):
            name: ClassVar[str] = "extra-dataset"


        class ExtraPredictor(MacsBaseline):
            name: ClassVar[str] = "extra-predictor"


        @hookimpl
        def nascore_search_spaces():
            return [ExtraSpace]


        @hookimpl
        def nascore_search_strategies():
            return [ExtraStrategy]


        @hookimpl
        def nascore_cost_models():
            return [ExtraCost]


        @hookimpl
        def nascore_tasks():
            return [ExtraTask]


        @hookimpl
        def nascore_datasets():
            return [ExtraDataset]


        @hookimpl
        def nascore_predictors():
            return [ExtraPredictor]
    ''',
    "broken": '''
        import nascore_testplugin_everykind_missing  # noqa: F401  (as a plugin whose dependency is missing)
    ''',
}

#: the tests whose expected messages list installed components or count the plugins that failed to load
LISTING_TESTS = [
    "tests/test_spec.py::test_unknown_component_lists_available_with_suggestion",
    "tests/test_spec.py::test_every_error_is_reported_at_once_in_spec_order",
    *(f"tests/test_bad_inputs.py::test_bad_input[{case}]" for case in (
        "spec-unknown-space", "spec-unknown-task", "data-export-unknown-dataset", "arch-unknown-space",
        "named-arch-unknown")),
    "tests/test_bad_inputs.py::test_spec_against_plugins",
    "tests/test_plugins.py::test_spec_uses_external_components_by_name",
    "tests/test_plugins.py::test_good_plugins_have_no_problems",
    "tests/test_plugins.py::test_nascore_plugins_command_lists_everything",
    "plugins/detectron2/tests/test_d2_install.py::test_with_detectron2_the_task_registers",
    "tests/test_predictors.py::test_fit_eval_predict_flow",  # every installed baseline is fitted and compared
]


@pytest.mark.slow
def test_messages_hold_with_a_third_party_plugin_installed(tmp_path):
    """With a plugin adding a component of every kind and a named arch, next to one that fails to load, the
    tests whose messages list what is installed still pass (a fresh pytest that sees the plugin installed)."""
    site = install_distribution(tmp_path, EXTRA_DIST, EXTRA_PKG, EXTRA_MODULES,
                                {"extra": "extra", "extra-broken": "broken"})
    repo = Path(__file__).resolve().parents[1]
    seen = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""\
        from nascore.registry import get_registry
        r = get_registry()
        print(sorted((e.kind, e.name) for e in r.all_entries() if e.source.dist == {EXTRA_DIST!r}))
        print([p.source.entry_point for p in r.problems if p.source.dist == {EXTRA_DIST!r}])
        print('extra_arch' in r.get('space', 'extra-space').named_archs())""")],
        capture_output=True, text=True, env=_env(site), timeout=300, check=False)
    assert seen.stdout.splitlines() == [
        ("[('cost', 'extra-cost'), ('dataset', 'extra-dataset'), ('predictor', 'extra-predictor'), "
         "('space', 'extra-space'), ('strategy', 'extra-strategy'), ('task', 'extra-task')]"),
        f"['extra-broken = {EXTRA_PKG}.broken']", "True"], seen.stderr
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *LISTING_TESTS],
                          capture_output=True, text=True, cwd=repo, env=_env(site), timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " failed" not in proc.stdout and " passed" in proc.stdout

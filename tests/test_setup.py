"""The set-up as documented is the set-up CI runs: the README's test command is .ci/run's (and CONTRIBUTING's),
the documented commands install CI's PyTorch pair from constraints.txt, and that pair lies in the range
pyproject.toml declares (a range, so that installing nascore or a plugin keeps a user's PyTorch)."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _after(text: str, heading: str) -> str:
    """The body of the first fenced bash block after ``heading``."""
    return re.search(re.escape(heading) + r".*?^```bash\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)[1].strip()


def _pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    return dict(line.split("==") for line in (line.partition("#")[0].strip() for line in lines) if line)


def test_ci_runs_the_readme_test_command():
    command = _after(README, "The tests (the same command CI runs):")
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == command
    assert _after((REPO / "CONTRIBUTING.md").read_text(), "Set up and test with the README's command") == command


def test_documented_installs_use_the_constraints():
    for heading in ("After cloning", "The tests (the same command CI runs):", "install the\nCPU-only build first"):
        assert " -c constraints.txt " in _after(README, heading), heading


def test_ci_pins_lie_in_the_declared_ranges():
    pins = _pins()
    assert set(pins) == {"torch", "torchvision"}
    declared = {req.name: req for req in map(Requirement, tomllib.loads((REPO / "pyproject.toml").read_text())
                                             ["project"]["dependencies"])}
    for name, version in pins.items():
        assert declared[name].specifier.contains(version), f"constraints.txt {name}=={version}: {declared[name]}"
        assert not any(spec.operator in ("==", "===") for spec in declared[name].specifier), declared[name]
        assert f"{name} {version}" in README  # the README says which versions CI tests
    for plugin in REPO.glob("plugins/*/pyproject.toml"):
        names = {Requirement(r).name for r in tomllib.loads(plugin.read_text())["project"]["dependencies"]}
        assert not names & set(pins), f"{plugin}: PyTorch comes through nascore's range"

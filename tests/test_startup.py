"""What a command imports: `import nascore` and `nascore --help` load no torch, `nascore validate` no timm or
torchvision; nascore's exports load when first used; timm, imported later, still gets the named archs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nascore

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "torchvision")
# Only the plugins of the nascore distribution itself: installed plugins import what they use when they load
# (nascore-segmentation: segmentation-models-pytorch, and with it timm), which is theirs to make lazy.
OWN_PLUGINS = """
import importlib.metadata as md
every = md.entry_points
def nascore_only(**select):
    found = every(**select)
    if select.get("group") != "nascore":
        return found
    return md.EntryPoints(ep for ep in found if ep.dist.name == "nascore")
md.entry_points = nascore_only
"""


def imported_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has imported after running ``code``."""
    report = f"\nimport sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    proc = subprocess.run([sys.executable, "-c", f"import json\n{code}{report}"], capture_output=True,
                          text=True, cwd=REPO, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_import_and_help_load_no_torch():
    assert imported_after("import nascore.cli") == []
    assert imported_after("from nascore.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass") == []


def test_validate_loads_no_timm_or_torchvision():
    code = OWN_PLUGINS + "from nascore.cli import main\nassert main(['validate', 'examples/quickstart.yaml']) == 0"
    assert imported_after(code) == ["torch"]


def test_named_archs_reach_timm_imported_after_the_plugins():
    """`nascore validate` loads the plugins without timm; importing timm afterwards registers the named archs."""
    code = OWN_PLUGINS + ("from nascore.registry import get_registry\nget_registry()\nimport sys\n"
                          "assert 'timm' not in sys.modules\nimport timm\n"
                          "assert timm.create_model('nascore_fbnet_c', num_classes=3).num_classes == 3")
    assert "timm" in imported_after(code)


def test_every_export_resolves():
    assert nascore.__all__ == sorted(nascore.__all__)
    for name in nascore.__all__:
        assert getattr(nascore, name) is not None or name == "SHARED", name  # SHARED is None: the shared owner
    assert set(nascore.__all__) <= set(dir(nascore))

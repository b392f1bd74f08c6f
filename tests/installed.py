"""What the registry lists in this environment: the built-ins plus any installed plugin's components (e.g.
nascore-detectron2's ``detectron2`` task), so messages listing them are checked wherever the suite runs.
test_plugins.py::test_messages_hold_with_a_third_party_plugin_installed proves it with an extra plugin."""
from __future__ import annotations

import importlib.metadata as md

from nascore.registry import Registry, Source, get_registry


def installed(kind: str) -> str:
    """The installed components of ``kind``, as an unknown-name message lists them."""
    return ", ".join(sorted(get_registry().names(kind)))


def named_archs() -> str:
    """The named archs of every installed space, as an unknown named arch's message lists them."""
    registry = get_registry()
    return ", ".join(sorted(n for space in registry.names("space") for n in registry.get("space", space).named_archs()))


def failed_note(extra: int = 0) -> str:
    """What an unknown-name message ends with while plugins failed to load (none: ''); ``extra``: broken plugins a
    test registers on top of the installed ones."""
    n = len(get_registry().problems) + extra
    return f" ({n} plugin{'s' if n > 1 else ''} failed to load; `nascore plugins` shows which and why)" if n else ""


def builtin_registry() -> Registry:
    """The built-ins only (whatever else is installed), registered from nascore's own entry points."""
    registry = Registry()
    for ep in md.distribution("nascore").entry_points:
        if ep.group == "nascore":
            registry.register(ep.load(), Source("nascore", f"{ep.name} = {ep.value}"))
    registry.collect()
    return registry

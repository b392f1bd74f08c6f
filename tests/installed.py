"""What the registry lists in this environment: the built-ins plus any installed plugin's components (e.g.
nascore-detectron2's ``detectron2`` task), so messages listing them are checked wherever the suite runs."""
from __future__ import annotations

from nascore.registry import get_registry


def installed(kind: str) -> str:
    return ", ".join(sorted(get_registry().names(kind)))

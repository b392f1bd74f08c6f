"""The first-party plugins of ``plugins/``: which components each one provides and how to install it, so that a
spec naming one of them without the plugin is told what to install. tests/test_first_party.py checks this table
against the plugins' pyproject.toml files and sources."""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class FirstParty:
    dist: str  # the distribution name, as in the plugin's pyproject.toml
    folder: str  # its folder under plugins/
    components: tuple[tuple[str, str], ...]  # (kind, name) of every component it provides
    needs: str = ""  # what pip does not install by itself

    @property
    def install(self) -> str:
        return f"pip install -e plugins/{self.folder}" + (f" ({self.needs})" if self.needs else "")


PLUGINS: tuple[FirstParty, ...] = (
    FirstParty("nascore-detectron2", "detectron2", (("task", "detectron2"),),
               "needs detectron2 built from source, see plugins/detectron2/README.md"),
    FirstParty("nascore-segmentation", "segmentation", (("task", "semantic-segmentation"), ("dataset", "mask-folder"))),
)


def provider(kind: str, name: str) -> FirstParty | None:
    """The first-party plugin that provides component ``name`` of ``kind``, if one does."""
    return next((p for p in PLUGINS if (kind, name) in p.components), None)


def same_dist(a: str, b: str) -> bool:
    """Whether two spellings name one distribution (``nascore_detectron2`` is ``nascore-detectron2``)."""
    return re.sub(r"[-_.]+", "-", a).lower() == re.sub(r"[-_.]+", "-", b).lower()

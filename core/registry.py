"""The plugin host: loads ``nascore`` entry points with pluggy and indexes the components they contribute.

A broken plugin (import error, unknown hook, a hook that raises or returns the wrong thing, a name
claimed twice) is recorded as a :class:`Problem` naming its distribution and entry point; every other
plugin stays usable.
"""
from __future__ import annotations

import difflib
import importlib.metadata as md
import inspect
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pluggy
from pydantic import BaseModel

from . import first_party, hookspecs
from .component import DISTRIBUTIONS
from .errors import NascoreError

#: kind -> (hook name, base class path). Base classes are imported lazily (they import torch).
FAMILIES: dict[str, tuple[str, str]] = {
    "space": ("nascore_search_spaces", "nascore.space:SearchSpace"),
    "strategy": ("nascore_search_strategies", "nascore.strategy:SearchStrategy"),
    "cost": ("nascore_cost_models", "nascore.cost:CostModel"),
    "task": ("nascore_tasks", "nascore.task:Task"),
    "dataset": ("nascore_datasets", "nascore.dataset:Dataset"),
    "predictor": ("nascore_predictors", "nascore.predictor:Predictor"),
}


def _base_class(kind: str) -> type:
    module, _, attr = FAMILIES[kind][1].partition(":")
    return getattr(__import__(module, fromlist=[attr]), attr)


@dataclass(frozen=True)
class Source:
    """Where a plugin comes from: its distribution and entry point."""

    dist: str
    entry_point: str

    def __str__(self) -> str:
        return f"distribution '{self.dist}', entry point '{self.entry_point}'"


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    cls: type
    source: Source


@dataclass(frozen=True)
class Problem:
    source: Source
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


class Registry:
    """Components by kind and name, the pluggy manager for lifecycle hooks, and the plugin problems."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in FAMILIES}
        self.conflicts: dict[tuple[str, str], list[Entry]] = {}
        self.problems: list[Problem] = []
        self._sources: dict[str, Source] = {}
        self._collected: set[str] = set()  # plugins whose component hooks were called already

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def from_entry_points(cls, group: str = hookspecs.PROJECT) -> Registry:
        registry = cls()
        eps = sorted(md.entry_points(group=group),
                     key=lambda ep: (_dist_name(ep) != "nascore", _dist_name(ep), ep.name))
        for ep in eps:
            source = Source(_dist_name(ep), f"{ep.name} = {ep.value}")
            try:
                plugin = ep.load()
            except Exception as exc:  # any import failure must not take the host down
                registry.problems.append(Problem(source, f"failed to import: {type(exc).__name__}: {exc}"))
                continue
            registry.register(plugin, source)
        registry.collect()
        registry._call_loaded_hooks()
        return registry

    def register(self, plugin: Any, source: Source) -> None:
        """Register one plugin object (usually a module) implementing hooks."""
        key = f"{source.dist}:{source.entry_point}"
        try:
            self.pm.register(plugin, name=key)
        except pluggy.PluginValidationError as exc:
            self.problems.append(Problem(source, f"invalid hook implementation: {exc}"))
            return
        except Exception as exc:  # ValueError when the same object or name is registered twice
            self.problems.append(Problem(source, f"cannot be registered: {exc}"))
            return
        self._sources[key] = source
        for hook_name in dir(plugin):
            if not hook_name.startswith("nascore_"):
                continue
            if not hasattr(hookspecs, hook_name):
                self.problems.append(Problem(source, f"implements unknown hook '{hook_name}' "
                                                     f"(known: {', '.join(_hook_names())})"))
            elif callable(getattr(plugin, hook_name, None)) and self.pm.parse_hookimpl_opts(plugin, hook_name) is None:
                self.problems.append(Problem(source, f"defines {hook_name} without the @nascore.hookimpl decorator, "
                                                     "so it is ignored"))

    def collect(self) -> None:
        """Call every component hook of every registered plugin, one plugin at a time."""
        for kind, (hook_name, _) in FAMILIES.items():
            base = _base_class(kind)
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name in self._collected or impl.plugin_name not in self._sources:
                    continue
                source = self._sources[impl.plugin_name]
                try:
                    result = impl.function()
                except Exception as exc:
                    self.problems.append(Problem(source, f"hook {hook_name} raised {type(exc).__name__}: {exc}"))
                    continue
                bad = _check_components(result, base)
                if bad:
                    self.problems.append(Problem(source, f"hook {hook_name} returned {bad}; expected a list of "
                                                         f"{base.__name__} subclasses with a str 'name', a "
                                                         "pydantic 'Config' and every abstract method"))
                    continue
                for comp in result:
                    self._add(Entry(kind, comp.name, comp, source))
        self._collected.update(self._sources)

    def _call_loaded_hooks(self) -> None:
        """Call every plugin's ``nascore_registry_loaded``; one that raises is a problem, the others still run."""
        for impl in self.pm.hook.nascore_registry_loaded.get_hookimpls():
            try:
                impl.function(**dict.fromkeys(impl.argnames, self))  # pluggy: it takes the arguments it names
            except Exception as exc:
                self.problems.append(Problem(self._sources[impl.plugin_name], "hook nascore_registry_loaded raised "
                                                                              f"{type(exc).__name__}: {exc}"))

    def _add(self, entry: Entry) -> None:
        DISTRIBUTIONS.setdefault(entry.cls, entry.source.dist)
        table = self.entries[entry.kind]
        key = (entry.kind, entry.name)
        if key in self.conflicts:
            self.conflicts[key].append(entry)
        elif entry.name in table:
            first = table.pop(entry.name)
            self.conflicts[key] = [first, entry]
        else:
            table[entry.name] = entry
            return
        self.problems.append(Problem(entry.source, f"{entry.kind} name '{entry.name}' is already provided by "
                                                   f"{self.conflicts[key][0].source}; neither can be used"))

    # -- lookup ------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> type:
        if (kind, name) in self.conflicts:
            who = "; ".join(str(e.source) for e in self.conflicts[(kind, name)])
            raise NascoreError(f"{kind} '{name}' is provided by several plugins ({who}); uninstall one of them")
        try:
            return self.entries[kind][name].cls
        except KeyError:
            raise NascoreError(self._unknown(kind, name)) from None

    def _unknown(self, kind: str, name: str) -> str:
        """Why ``name`` is not available: the first-party plugin that provides it and how to install it, or what
        is available."""
        plugin = first_party.provider(kind, name)
        if plugin is not None:
            said = f"{kind} '{name}' comes from the {plugin.dist} plugin"
            failed = [p for p in self.problems if first_party.same_dist(p.source.dist, plugin.dist)]
            if failed:
                return f"{said}, which is installed but failed to load: {failed[0].message}"
            if any(first_party.same_dist(s.dist, plugin.dist) for s in self._sources.values()):
                return f"{said}, but the installed version does not provide it; reinstall: {plugin.install}"
            return f"{said}, which is not installed: {plugin.install}"
        msg = unknown_name_message(kind, name, self.names(kind))
        if self.problems:  # the component may come from a plugin that failed to load
            msg += (f" ({len(self.problems)} plugin{'s' if len(self.problems) > 1 else ''} failed to load; "
                    "`nascore plugins` shows which and why)")
        return msg

    def all_entries(self) -> list[Entry]:
        rows = [e for table in self.entries.values() for e in table.values()]
        rows += [e for group in self.conflicts.values() for e in group]
        return sorted(rows, key=lambda e: (list(FAMILIES).index(e.kind), e.name, e.source.dist))

    @property
    def hook(self) -> Any:
        """Lifecycle hooks, e.g. ``registry.hook.nascore_epoch_end(run=..., epoch=..., metrics=...)``.

        A hook implementation that raises becomes a NascoreError naming its distribution and entry point
        (the original exception is chained, ``--debug`` shows it); ``self.pm.hook`` is the raw pluggy relay.
        """
        return _GuardedHooks(self)

    def _culprit(self, hook_name: str, exc: BaseException) -> Source | None:
        """The plugin whose implementation of ``hook_name`` raised ``exc`` (found in its traceback)."""
        codes = {getattr(impl.function, "__code__", None): impl.plugin_name
                 for impl in getattr(self.pm.hook, hook_name).get_hookimpls()}
        tb = exc.__traceback__
        while tb is not None:
            name = codes.get(tb.tb_frame.f_code)
            if name is not None:
                return self._sources.get(name)
            tb = tb.tb_next
        return None


class _GuardedHooks:
    """``registry.hook``: calls pluggy hooks; a plugin exception becomes a NascoreError naming the plugin."""

    def __init__(self, registry: Registry):
        self._registry = registry

    def __getattr__(self, hook_name: str) -> Any:
        caller = getattr(self._registry.pm.hook, hook_name)

        def call(**kwargs: Any) -> Any:
            try:
                return caller(**kwargs)
            except NascoreError:
                raise
            except Exception as exc:
                source = self._registry._culprit(hook_name, exc)
                who = str(source) if source else "a plugin"
                raise NascoreError(f"{who}: hook {hook_name} raised {type(exc).__name__}: {exc}") from exc

        call.__name__ = hook_name
        return call


def unknown_name_message(kind: str, name: str, available: list[str]) -> str:
    msg = f"unknown {kind} '{name}'; available: {', '.join(available) or 'none'}"
    close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
    return msg + (f". Did you mean '{close[0]}'?" if close else "")


def _dist_name(ep: md.EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "<unknown distribution>"


def _hook_names() -> list[str]:
    return [n for n in dir(hookspecs) if n.startswith("nascore_")]


def _check_components(result: Any, base: type) -> str | None:
    """Why ``result`` is not a list of valid component classes, or None when it is."""
    if not isinstance(result, (list, tuple)):
        return f"a {type(result).__name__}"
    for item in result:
        if not (inspect.isclass(item) and issubclass(item, base)):
            return f"{item!r}, not a {base.__name__} subclass"
        if not isinstance(getattr(item, "name", None), str) or not item.name:
            return f"{item.__name__} without a str 'name'"
        config = getattr(item, "Config", None)
        if not (inspect.isclass(config) and issubclass(config, BaseModel)):
            return f"{item.__name__} without a pydantic 'Config'"
        if inspect.isabstract(item):
            return f"{item.__name__}, which does not implement {', '.join(sorted(item.__abstractmethods__))}"
    return None


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry built from installed entry points."""
    return Registry.from_entry_points()

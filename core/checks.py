"""What plugins hand back, checked where nascore takes it: a strategy's metrics rows, archs and state, a cost
model's prices, a task's metrics. A wrong value is a NascoreError (exit status 2) naming the component (its kind,
name, class and distribution) and the method, raised before anything is written from it."""
from __future__ import annotations

import io
import math
import numbers
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from .component import DISTRIBUTIONS
from .errors import NascoreError, first_line

if TYPE_CHECKING:
    from .component import Component


class Decision(Protocol):
    """What the checks read of a ``nascore.Decision`` (``nascore.supernet``, which uses these checks)."""

    name: str
    options: list[str]
    task: str | None

#: the keys nascore sets in every metrics row itself
RESERVED_KEYS = ("phase", "epoch")
#: what a metrics row holds besides numbers: JSON's values (lists and dicts of them too)
_JSON_LEAVES = (str, bool, int, float, type(None))
#: what ``torch.load(weights_only=True)`` loads besides tensors and lists, tuples and dicts of them
_CHECKPOINT_LEAVES = (*_JSON_LEAVES, bytes, complex, torch.Size, torch.dtype, torch.device)


def who(component: Component) -> str:
    """How a message names a component: ``strategy 'dnas' (class DNAS, distribution 'nascore')``; the distribution
    is the one whose plugin registered the class (``nascore.component.DISTRIBUTIONS``)."""
    cls = type(component)
    dist = DISTRIBUTIONS.get(cls)
    where = f", distribution '{dist}'" if dist is not None else ""
    return f"{component.kind} '{cls.name}' (class {cls.__name__}{where})"


def refuse(component: Component, method: str, problem: str) -> NascoreError:
    """The error for a value ``component.method()`` handed back: ``problem`` says what is wrong with it."""
    return NascoreError(f"{who(component)}: {method}() {problem}")


def _kind(value: Any) -> str:
    return type(value).__name__


def _json_problem(value: Any, path: str) -> str | None:
    """Why ``value`` (at ``path``) is not a JSON value nascore writes as it is, or None."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"key {k!r} ({_kind(k)}) in {path}; expected text keys"
            problem = _json_problem(v, f"{path}.{k}")
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        return next(filter(None, (_json_problem(v, f"{path}[{i}]") for i, v in enumerate(value))), None)
    if isinstance(value, _JSON_LEAVES):
        return None
    hint = " (a tensor's .item() is its number)" if isinstance(value, torch.Tensor) else ""
    return f"a {_kind(value)} for {path}{hint}; expected a number, text, bool or null, or a list or dict of them"


def metrics_row(row: Any, component: Component, method: str) -> dict[str, Any]:
    """``row`` if it is a metrics row (``metrics.jsonl``): a dict of metric name -> number, text, bool, null, or a
    list or dict of those; the keys nascore sets (``phase``, ``epoch``) are not the component's."""
    if not isinstance(row, Mapping):
        raise refuse(component, method, f"returned a {_kind(row)}; expected a dict of metric name -> value, "
                                        "one row of metrics.jsonl")
    taken = [k for k in RESERVED_KEYS if k in row]
    if taken:
        raise refuse(component, method, f"returned key '{taken[0]}', which nascore sets itself in every row "
                                        f"({', '.join(RESERVED_KEYS)})")
    problem = next(filter(None, (f"key {k!r} ({_kind(k)}); expected text keys" if not isinstance(k, str)
                                 else _json_problem(v, repr(k)) for k, v in row.items())), None)
    if problem:
        raise refuse(component, method, f"returned {problem}")
    return dict(row)


def _required(decisions: list[Decision], owner: str | None) -> list[Decision]:
    """The decisions an arch of ``owner`` chooses: all of them for a shared arch, a task's own and the shared ones
    for a task's."""
    return [d for d in decisions if owner is None or d.task is None or d.task == owner]


def _owner_label(owner: str | None) -> str:
    return "nascore.SHARED" if owner is None else repr(owner)


def _check_owner(owner: Any, tasks: list[str]) -> str | None:
    if owner is None or (isinstance(owner, str) and owner in tasks):
        return None
    return (f"owner {owner!r}; expected nascore.SHARED (None) or a task of the run ({', '.join(tasks)})")


def _check_choices(choices: Any, owner: str | None, decisions: list[Decision]) -> str | None:
    """Why ``choices`` is not an arch of ``owner`` (an option of each decision it needs), or None."""
    if not isinstance(choices, Mapping):
        return f"a {_kind(choices)} as the choices of owner {_owner_label(owner)}; expected a dict decision -> option"
    known = {d.name: d for d in decisions}
    for name, option in choices.items():
        if name not in known:
            return (f"decision {name!r} for owner {_owner_label(owner)}, which the supernet does not have "
                    f"(its decisions: {', '.join(known)})")
        if option not in known[name].options:
            return (f"option {option!r} for decision '{name}'; expected one of {', '.join(known[name].options)}")
    missing = [d.name for d in _required(decisions, owner) if d.name not in choices]
    if missing:
        return (f"no option for decision{'s' if len(missing) > 1 else ''} {', '.join(missing)} in the arch of "
                f"owner {_owner_label(owner)}, which chooses {'them' if len(missing) > 1 else 'it'}")
    return None


def derived(archs: Any, decisions: list[Decision], tasks: list[str], component: Component
            ) -> dict[str | None, dict[str, str]]:
    """``derive()``'s archs, if they are what its contract says: a non-empty dict owner (``nascore.SHARED`` or a
    task of the run) -> choices, an option of every decision the owner's arch needs and of no other."""
    if not isinstance(archs, Mapping) or not archs:
        found = f"a {_kind(archs)}" if not isinstance(archs, Mapping) else "no arch"
        raise refuse(component, "derive", f"returned {found}; expected a dict owner -> choices, e.g. "
                                          "{nascore.SHARED: {decision: option}}")
    for owner, choices in archs.items():
        problem = _check_owner(owner, tasks) or _check_choices(choices, owner, decisions)
        if problem:
            raise refuse(component, "derive", f"returned {problem}")
    return {owner: dict(choices) for owner, choices in archs.items()}


def _listed(archs: Any, tasks: list[str], item_problem: Callable[[Any, str | None], str | None], what: str
            ) -> str | None:
    """Why ``archs`` is not a dict owner -> list of ``what`` (each checked by ``item_problem``), or None."""
    if not isinstance(archs, Mapping):
        return f"a {_kind(archs)}; expected a dict owner -> list of {what}"
    for owner, listed in archs.items():
        problem = _check_owner(owner, tasks)
        if problem is None and not isinstance(listed, (list, tuple)):
            problem = f"a {_kind(listed)} for owner {_owner_label(owner)}; expected a list of {what}"
        problem = problem or next(filter(None, (item_problem(item, owner) for item in listed)), None)
        if problem:
            return problem
    return None


def sampled(archs: Any, decisions: list[Decision], tasks: list[str], component: Component
            ) -> dict[str | None, list[dict[str, str]]]:
    """``Sampling.sample()``'s archs, if they are a dict owner -> list of choices (each as ``derived`` checks)."""
    problem = _listed(archs, tasks, lambda choices, owner: _check_choices(choices, owner, decisions), "choices")
    if problem:
        raise refuse(component, "sample", f"returned {problem}")
    return {owner: [dict(c) for c in listed] for owner, listed in archs.items()}


def evaluated(archs: Any, decisions: list[Decision], tasks: list[str], component: Component
              ) -> dict[str | None, list[tuple[str, dict[str, str], dict[str, float]]]]:
    """``Evaluating.evaluated()``'s archs, if they are a dict owner -> list of (name, choices, metrics), the
    metrics a dict of ``<task>/<metric>`` -> number."""
    def trained(item: Any, owner: str | None) -> str | None:
        if not (isinstance(item, (list, tuple)) and len(item) == 3 and isinstance(item[0], str)):
            return f"{item!r} for owner {_owner_label(owner)}; expected (name, choices, metrics)"
        return _check_choices(item[1], owner, decisions) or numbers_problem(item[2], f"the metrics of {item[0]!r}")

    problem = _listed(archs, tasks, trained, "(name, choices, metrics)")
    if problem:
        raise refuse(component, "evaluated", f"returned {problem}")
    return {owner: [(name, dict(choices), dict(metrics)) for name, choices, metrics in listed]
            for owner, listed in archs.items()}


def numbers_problem(values: Any, what: str) -> str | None:
    """Why ``values`` is not a dict of text -> real number (``what`` names it), or None."""
    if not isinstance(values, Mapping):
        return f"a {_kind(values)} as {what}; expected a dict of name -> number"
    for k, v in values.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, numbers.Real):
            return f"{k!r}: {v!r} ({_kind(v)}) in {what}; expected a dict of name -> number"
    return None


def _skeleton(obj: Any) -> Any:
    """``obj`` with every plain tensor replaced by an empty one of its dtype: what ``torch.load(weights_only=True)``
    must accept of it, cheap to save."""
    if type(obj) in (torch.Tensor, nn.Parameter):
        return torch.empty(0, dtype=obj.dtype)
    if type(obj) in (dict, OrderedDict):
        return type(obj)((k, _skeleton(v)) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(_skeleton(v) for v in obj)
    return obj


def _foreign(obj: Any, path: str) -> str | None:
    """The first object in ``obj`` that is not a tensor, a plain value or a list, tuple or dict of them."""
    if isinstance(obj, Mapping):
        items: Iterable = ((f"{path}[{k!r}]", v) for k, v in obj.items())
    elif type(obj) in (list, tuple):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(obj))
    elif isinstance(obj, (torch.Tensor, *_CHECKPOINT_LEAVES)):
        return None
    else:
        return f"a {type(obj).__module__}.{type(obj).__qualname__} at {path}"
    return next(filter(None, (_foreign(v, p) for p, v in items)), None)


def checkpoint_state(state: Any, component: Component, method: str = "state_dict") -> dict[str, Any]:
    """``state`` if it is a dict a checkpoint can hold: one ``torch.load(weights_only=True)`` loads back (tensors,
    numbers, text, bool, None, and lists, tuples and dicts of them); checked on a copy with empty tensors."""
    if not isinstance(state, Mapping):
        raise refuse(component, method, f"returned a {_kind(state)}; expected a dict")
    try:
        buffer = io.BytesIO()
        torch.save(_skeleton(state), buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickling and torch's unpickler raise many types; say what is wrong
        found = _foreign(state, "state") or f"what torch says: {first_line(exc)}"
        raise refuse(component, method, f"returned a state no checkpoint can hold: {found}; a checkpoint holds "
                                        "tensors, numbers, text, bool, None and lists, tuples and dicts of them "
                                        "(what torch.load(weights_only=True) loads)") from exc
    return state


def price(value: Any, component: Component, method: str) -> float:
    """A cost model's price, if it is a finite real number (or a one-element tensor of one)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise refuse(component, method, f"returned a {_kind(value)}; expected a number (the price, in "
                                        f"{component.unit or 'its unit'})")
    if not math.isfinite(value):
        raise refuse(component, method, f"returned {value}; expected a finite number")
    return float(value)

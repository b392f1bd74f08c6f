"""Turning pydantic errors into one line per problem: ``path.to.field: message``."""
from __future__ import annotations

import collections.abc
import difflib
import inspect
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError


def format_loc(loc: tuple, prefix: str = "") -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "<root>"


def format_validation_error(exc: ValidationError, prefix: str = "", model: Any = None) -> list[str]:
    """One ``path: message`` line per error. With ``model`` (the validated type), union tags are dropped
    from paths and unknown keys get the expected field names and a close-match suggestion."""
    lines = []
    for err in exc.errors(include_url=False):
        raw = tuple(err["loc"])
        try:
            line = f"{format_loc(_clean_loc(raw, model), prefix)}: {_message(err, raw, model)}"
        except Exception:  # never let an odd type hide the error itself
            line = f"{format_loc(_clean_loc(raw, None), prefix)}: {err['msg']}"
        lines.append(line)
    return lines


def _message(err: dict, loc: tuple, model: Any) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "model_type" or kind == "model_attributes_type" or kind == "dict_type":
        return f"expected a mapping of fields, got {_describe(err.get('input'))}"
    if kind == "value_error" and msg.startswith("Value error, "):
        return msg[len("Value error, "):]
    if kind == "extra_forbidden" and loc:
        fields = _fields(_type_at(model, loc[:-1])) if model is not None else None
        if fields:
            key = str(loc[-1])
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
            return (f"unknown field; expected one of: {', '.join(fields)}"
                    + (f". Did you mean '{close[0]}'?" if close else ""))
        return "unknown field (not permitted here)"
    return msg


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


# -- walking a type along an error location --------------------------------------------------------
def _is_model(tp: Any) -> bool:
    return inspect.isclass(tp) and issubclass(tp, BaseModel)


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any] | None:
    if get_origin(tp) in (Union, types.UnionType):
        return [_unwrap(a) for a in get_args(tp) if a is not type(None)]
    return None


def _tags(member: Any) -> set[str]:
    """Literal values of a model's fields: the tags a discriminated union may put in a location."""
    out: set[str] = set()
    if _is_model(member):
        for f in member.model_fields.values():
            ann = _unwrap(f.annotation)
            if get_origin(ann) is Literal:
                out.update(str(v) for v in get_args(ann))
    return out


def _step(tp: Any, part: Any) -> tuple[Any, bool]:
    """(type after following ``part``, whether ``part`` belongs in the user-facing path)."""
    tp = _unwrap(tp)
    members = _union_members(tp)
    if members is not None:
        if len(members) == 1:
            return _step(members[0], part)
        # pydantic puts the member's tag (class name, discriminator value, type name) after a union
        for m in members:
            if isinstance(part, str) and (part == getattr(m, "__name__", None) or part in _tags(m)
                                          or part == _type_name(m)):
                return m, False
        return None, not isinstance(part, str)
    if _is_model(tp):
        for name, f in tp.model_fields.items():
            if part in (name, f.alias):
                return f.annotation, True
        return None, True
    origin, args = get_origin(tp), get_args(tp)
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence) and isinstance(part, int):
        return (args[0] if args else None), True
    if origin is dict and args:
        return args[1], True
    return None, True


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) if get_origin(tp) is None else str(tp)


def _clean_loc(loc: tuple, model: Any) -> tuple:
    tp, out = model, []
    for part in loc:
        # validator wrappers (function-after[...], ...) add their name to the location; noise to a user
        if isinstance(part, str) and part.startswith("function-"):
            continue
        keep = True
        if tp is not None:
            tp, keep = _step(tp, part)
        if keep:
            out.append(part)
    return tuple(out)


def _type_at(model: Any, loc: tuple) -> Any:
    tp = model
    for part in loc:
        if tp is None:
            return None
        if not (isinstance(part, str) and part.startswith("function-")):
            tp, _ = _step(tp, part)
    tp = _unwrap(tp) if tp is not None else None
    members = _union_members(tp) if tp is not None else None
    if members and len(members) == 1:
        tp = members[0]
    return tp


def _fields(tp: Any) -> list[str] | None:
    if not _is_model(tp):
        return None
    return [f.alias or name for name, f in tp.model_fields.items()]

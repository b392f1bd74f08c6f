"""Turning pydantic errors into one line per problem: ``path.to.field: message``."""
from __future__ import annotations

from pydantic import ValidationError


def format_loc(loc: tuple, prefix: str = "") -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "<root>"


def format_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        # discriminated/tagged unions add the tag to the location; it is noise to a user
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        lines.append(f"{format_loc(loc, prefix)}: {err['msg']}")
    return lines

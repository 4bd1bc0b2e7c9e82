"""The checks every config and API argument goes through before any work: a value's type against its field's
annotation, numbers in range. A failed check is one line, raised as :class:`~flopcast.errors.BadType` (also a
``TypeError``) or :class:`~flopcast.errors.BadValue` (also a ``ValueError``), both :class:`FlopcastError`."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Sequence
from typing import Any

from .errors import BadType, BadValue

_SCALARS: dict[str, Any] = {"int": numbers.Integral, "float": numbers.Real, "bool": bool, "str": str}


def shown(value: Any, width: int = 60) -> str:
    """A value as one short line for a message (a DataFrame's repr spans many)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def require(cond: bool, msg: str) -> None:
    """Raise :class:`BadValue` with ``msg`` (one line for the user) unless ``cond`` holds."""
    if not cond:
        raise BadValue(msg)


def finite(x: Any) -> bool:
    """True for a real, finite number (rejects NaN, +-inf, bools and strings)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def check_budget(budget: float, what: str = "budget") -> None:
    """A FLOP budget must be a finite number >= 1."""
    require(finite(budget) and budget >= 1, f"{what} must be a finite number of FLOPs >= 1, got {budget}")


def check_ints(name: str, values: Sequence[Any], minimum: int = 1) -> None:
    """Every value an integer >= ``minimum`` (CLI lists such as --seq 128,512)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise BadType(f"{name} must be a list of integers, got {shown(values)}")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum]
    require(not bad and len(values) > 0, f"{name} must be integers >= {minimum}, got {shown(list(values))}")


def _fits(v: Any, kind: str) -> bool | None:
    """Whether ``v`` fits one alternative of an annotation (``int``, ``tuple[float, ...]``); None where this
    module cannot tell (nested configs, dicts): the class checks those itself."""
    kind = kind.strip()
    if kind == "None":
        return v is None
    if kind.startswith("tuple[") and kind.endswith(", ...]"):
        inner = kind[len("tuple["):-len(", ...]")]
        return isinstance(v, (list, tuple)) and all(_fits(x, inner) is not False for x in v)
    t = _SCALARS.get(kind)
    if t is None:
        return None
    if isinstance(v, bool):
        return kind == "bool"
    return isinstance(v, t)


def _wanted(kinds: list[str]) -> str:
    names = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
    plural = {"int": "integers", "float": "numbers", "str": "strings"}
    out = []
    for k in kinds:
        if k.startswith("tuple["):
            inner = k[len("tuple["):-len(", ...]")]
            out.append(f"a list of {plural.get(inner, inner)}")
        elif k != "None":
            out.append(names.get(k, k))
    return " or ".join(out)


def type_problems(cls: type, data: dict[str, Any]) -> list[str]:
    """Values whose type does not fit the field's annotation (``steps = 3.5``, ``lr = "fast"``,
    ``quantiles = 0.5``)."""
    out = []
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kinds = [k.strip() for k in str(f.type).split("|")]
        fits = [_fits(data[f.name], k) for k in kinds]
        if not any(r is not False for r in fits):
            out.append(f"{f.name} must be {_wanted(kinds)}, got {shown(data[f.name])}")
    return out


def check_types(obj: Any) -> None:
    """Refuse a config whose fields do not fit their annotations (one line naming them); numpy numbers become
    Python ones, lists of a tuple field tuples."""
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    bad = type_problems(type(obj), values)
    if bad:
        raise BadType("; ".join(bad))
    for name, v in values.items():
        if isinstance(v, list):
            object.__setattr__(obj, name, tuple(v))
        elif isinstance(v, numbers.Integral) and not isinstance(v, (int, bool)):
            object.__setattr__(obj, name, int(v))
        elif isinstance(v, numbers.Real) and not isinstance(v, (int, float)):
            object.__setattr__(obj, name, float(v))


def check_arg(name: str, value: Any, *kinds: type, optional: bool = True) -> None:
    """An API argument of one of ``kinds`` (or None where ``optional``): one line otherwise, before any work
    (``evaluate(model=123)``)."""
    if value is None and optional:
        return
    if os.PathLike in kinds and isinstance(value, str) and not value.strip():
        raise BadValue(f"{name} is an empty path; name a file or directory")
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return
    names = " or ".join("a path" if k is os.PathLike else _wanted([k.__name__]) for k in kinds)
    raise BadType(f"{name} must be {names}{' or None' if optional else ''}, got {shown(value)}")


def stage_names(name: str, value: Any) -> list[str]:
    """Stage names given as a list, or as one string of comma-separated names (``restart="final"``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [n.strip() for n in value.split(",") if n.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
        raise BadType(f"{name} must be stage names (a list of strings, or one string), got {shown(value)}")
    return list(value)

"""Command-line flags generated from typed dataclasses (as Ray's train benchmark builds its
argparse from one pydantic config): a field's type, default, bounds and help live on the field,
and nowhere else.

Generated flags have no argparse default: the namespace holds only what the user typed, so the
layers (dataclass defaults < a --config file or a resumed run's config < the command line) are
merged in one place, and `--resume` can tell which flags were given.
"""
from __future__ import annotations

import argparse
import json
import types
import typing
from dataclasses import MISSING, fields, is_dataclass, replace
from functools import cache

from trainers.hyp import bound_error


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


@cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _base_type(annotation):
    """(type, optional) of `int`, `float | None`, `dict`..."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return annotation, False


def _number(kind, meta: dict):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text}") from None
        if (why := bound_error(value, meta)) is not None:
            raise argparse.ArgumentTypeError(f"{why}, got {text}")
        return value
    return parse


def _checked(parse):
    """An argparse type from a parser that raises ValueError with a message worth showing
    (argparse would replace it by "invalid value")."""
    def check(text: str):
        try:
            return parse(text)
        except argparse.ArgumentTypeError:
            raise
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    check.__name__ = getattr(parse, "__name__", "value")
    return check


def positive(kind):
    """An argparse type for a number > 0 of `kind` (flags outside the typed configs)."""
    return _number(kind, {"gt": 0})


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e.msg}): {text}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text}")
    return value


def _default_text(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, dict):
        return json.dumps(value) if value else "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_of(f):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def add_flags(parser, cls, *, defaults=None, only: tuple[str, ...] | None = None,
              default_note: str | None = None) -> None:
    """One flag per field of dataclass `cls` that has a "help" (nested dataclasses are left to
    their own call). `defaults`, an instance, changes the defaults shown; `default_note`
    replaces them (e.g. "the run's own")."""
    hints = _hints(cls)
    for f in fields(cls):
        meta = f.metadata
        if "help" not in meta or (only is not None and f.name not in only):
            continue
        kind, optional = _base_type(hints[f.name])
        default = getattr(defaults, f.name) if defaults is not None else default_of(f)
        shown = default_note or _default_text(default)
        text = meta["help"].replace("%", "%%")
        if meta.get("sized"):
            text += ("; when not given, a pass chooses it from the data and the machine "
                     "(printed with the plan)")
        if not (default is None and "none:" in text and default_note is None):
            text += f" (default {shown})"  # else the help says what none means
        kw: dict = {"help": text, "default": argparse.SUPPRESS, "dest": f.name}
        if "metavar" in meta:
            kw["metavar"] = meta["metavar"]
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif "parse" in meta:
            kw["type"] = _checked(meta["parse"])
        elif "choices" in meta:
            kw["choices"] = meta["choices"]
        elif kind in (int, float):
            kw["type"] = _number(kind, meta)
        elif kind is dict:
            kw["type"] = _json_object
            kw.setdefault("metavar", "JSON")
        parser.add_argument(flag_name(f.name), **kw)


def given(args: argparse.Namespace, cls) -> dict:
    """The fields of `cls` (those with flags) the command line set."""
    return {f.name: getattr(args, f.name) for f in fields(cls)
            if "help" in f.metadata and hasattr(args, f.name)}


def build(cls, args: argparse.Namespace, base=None, **extra):
    """An instance of `cls`: `base` (or the defaults), then `extra`, then the flags given."""
    values = {**extra, **given(args, cls)}
    if base is not None:
        return replace(base, **values)
    return cls(**values)


def changed(base, args: argparse.Namespace) -> dict[str, tuple]:
    """{name: (saved, given)} for every flag given with a value other than `base`'s."""
    out = {}
    for name, value in given(args, type(base)).items():
        if getattr(base, name) != value:
            out[name] = (getattr(base, name), value)
    return out


def nested(cls) -> dict[str, type]:
    """{field name: dataclass type} of the fields of `cls` that are dataclasses themselves."""
    hints = _hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if is_dataclass(hints[f.name])}

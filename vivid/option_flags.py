"""Command-line flags made from option fields (`vivid.options.AnimateOptions`,
`vivid.sampling.Sampling`), as LivePortrait makes its CLI from one dataclass: each flag's type,
choices and help, and the default its help states, come from the field and its metadata
(`vivid.sampling.option`), so no default is written twice.

Flags default to None, so a front end can tell the options a user gave (`given_options`) from
those left at the field's default; `--x/--no-x` for a yes/no option, or the one flag its
metadata names (`--absolute` sets `relative` to False).
"""
from __future__ import annotations

import argparse
import os
import types
import typing
from dataclasses import MISSING, Field, fields
from typing import Iterable, Mapping


def flag_name(f: Field) -> str:
    """The flag of an option field (`--max-frames` for `max_frames`, or the one its metadata names)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _value_type(cls: type, f: Field) -> type:
    """The field's type without its None (`int | None` -> int)."""
    hint = typing.get_type_hints(cls)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(t for t in typing.get_args(hint) if t is not type(None))
    return hint


def _default_text(f: Field, env: str | None) -> str:
    """What the help says a flag left out means."""
    meta = f.metadata
    if f.default is MISSING:
        text = ""
    elif "default_text" in meta:
        text = meta["default_text"]
    elif f.default is None:
        return ""
    elif isinstance(f.default, bool):
        text = "on" if f.default else "off"
    else:
        text = str(f.default)
    return f"${env}, else {text}" if env else text


def add_option_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                     names: Iterable[str] | None = None, env: Mapping[str, str] = {}) -> None:
    """A flag for each option field of the dataclass `cls` named in `names` (default: every
    field with a help text), in the fields' order; `env` names an environment variable whose
    value a flag left out takes (e.g. {"weights": "VIVID_WEIGHTS"})."""
    wanted = None if names is None else set(names)
    for f in fields(cls):
        if "help" not in f.metadata or (wanted is not None and f.name not in wanted):
            continue
        meta, kind = f.metadata, _value_type(cls, f)
        default = _default_text(f, env.get(f.name))
        keywords: dict = {"dest": f.name, "default": os.environ.get(env[f.name]) if f.name in env else None}
        if kind is bool and "flag" in meta:  # one flag that sets the option to the opposite of its default
            keywords.update(action="store_false" if f.default else "store_true", help=meta.get("flag_help", meta["help"]))
        elif kind is bool:
            keywords.update(action=argparse.BooleanOptionalAction,
                            help=meta["help"] + (f" (default: {default})" if default else ""))
        else:
            keywords.update(type=kind, help=meta["help"] + (f" (default: {default})" if default else ""))
            for key in ("choices", "metavar"):
                if key in meta:
                    keywords[key] = meta[key]
        parser.add_argument(flag_name(f), **keywords)


def given_options(args: argparse.Namespace, cls: type) -> dict:
    """The options the flags of `args` gave, as keywords of `cls` (flags left out are absent;
    a value the field's metadata calls `none_as` means None, e.g. `--max-side 0`)."""
    given = {}
    for f in fields(cls):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        given[f.name] = None if "none_as" in f.metadata and value == f.metadata["none_as"] else value
    return given


__all__ = ["add_option_flags", "flag_name", "given_options"]

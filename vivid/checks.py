"""Checks of single option values: whole numbers, numbers in a range, flags and choices.

One check per kind of value, so a bad value gets the same words whether it came from a flag,
an app control, a keyword of the Python API or a model's own recommendation: each refusal is
an OptionError that names the option and quotes the value.
"""
from __future__ import annotations

import math
import numbers

from .errors import OptionError


def whole(name: str, value, low: int, high: int | None = None, unit: str = "") -> int:
    """`value` as an int in [low, high] (24.0 from a slider is 24), else an OptionError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value) \
                and float(value).is_integer():
            value = int(value)
        else:
            raise OptionError(f"{name} must be a whole number{unit}, got {value!r}", name)
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise OptionError(f"{name} must be {bound}{unit}, got {value}", name)
    return value


def real(name: str, value, low: float, high: float) -> float:
    """`value` as a finite float in [low, high], else an OptionError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(f"{name} must be a number, got {value!r}", name)
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise OptionError(f"{name} must be between {low:g} and {high:g}, got {value:g}", name)
    return value


def flag(name: str, value) -> bool:
    """`value` as a bool (None is False; numpy's bools count), else an OptionError."""
    if not isinstance(value, (bool, type(None))) and type(value).__name__ != "bool_":
        raise OptionError(f"{name} must be True or False, got {value!r}", name)
    return bool(value)


def choice(name: str, value, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`, else an OptionError listing them."""
    if value not in choices:
        raise OptionError(f"{name} must be one of {', '.join(choices)}, got {value!r}", name)
    return value


__all__ = ["choice", "flag", "real", "whole"]

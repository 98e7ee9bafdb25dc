"""Valid values of a setting: ranges and choices, and the one-line errors for values outside them."""
from __future__ import annotations

from typing import Any, Callable

from maskvlp.config.errors import ConfigError

Rule = tuple[Callable[[Any], bool], str]  # (is the value valid, what a valid value is)


def at_least(low: float) -> Rule:
    return (lambda v: v >= low), f"must be >= {low:g}"


def above(low: float) -> Rule:
    return (lambda v: v > low), f"must be > {low:g}"


def within(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Rule:
    left, right = "(" if low_open else "[", ")" if high_open else "]"

    def ok(v: float) -> bool:
        return (low < v if low_open else low <= v) and (v < high if high_open else v <= high)

    return ok, f"must be in {left}{low:g}, {high:g}{right}"


def check_rule(key: str, value: Any, rule: Rule, hint: str = "") -> None:
    ok, text = rule
    if not ok(value):
        raise ConfigError(f"bad value for {key!r}: {value}; {text}{hint}")


def check_choice(key: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"bad value for {key!r}: {value!r}; valid choices: {', '.join(valid)}")

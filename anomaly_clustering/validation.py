"""Checks shared by every plugin, in scikit-learn's idiom: parameters are validated at the start of ``fit`` against a
class's ``parameter_constraints`` (:func:`validate_params`; ``config.check_plugins`` runs the same check before a run
starts), and a component used before ``fit`` raises :class:`NotFittedError` (scikit-learn's own class, so
``except sklearn.exceptions.NotFittedError`` catches it too)."""

from __future__ import annotations

from typing import Any

from sklearn.exceptions import NotFittedError

__all__ = ["NotFittedError", "check_is_fitted", "Interval", "validate_params"]


def check_is_fitted(component: Any, *attributes: str) -> None:
    """Raise :class:`NotFittedError` unless ``component`` has every learned attribute in ``attributes``."""
    missing = [a for a in attributes if not hasattr(component, a)]
    if missing:
        raise NotFittedError(f"{type(component).__name__} is not fitted yet (no {missing[0]}): call fit (or fit_predict / fit_transform) first")


class Interval:
    """A numeric range for :func:`validate_params`: ``Interval(0, None)`` is x > 0 (open), ``closed="left"`` makes
    it x >= lo, ``closed="both"`` lo <= x <= hi; integers only with ``integer=True``."""

    def __init__(self, lo: float | None, hi: float | None, closed: str = "neither", integer: bool = False) -> None:
        self.lo, self.hi, self.closed, self.integer = lo, hi, closed, integer

    def __contains__(self, x: Any) -> bool:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or (self.integer and not isinstance(x, int)):
            return False
        left_ok = self.lo is None or (x >= self.lo if self.closed in ("left", "both") else x > self.lo)
        right_ok = self.hi is None or (x <= self.hi if self.closed in ("right", "both") else x < self.hi)
        return left_ok and right_ok

    def __repr__(self) -> str:
        lb = "[" if self.closed in ("left", "both") else "("
        rb = "]" if self.closed in ("right", "both") else ")"
        kind = "an integer" if self.integer else "a number"
        return f"{kind} in {lb}{'-inf' if self.lo is None else self.lo}, {'inf' if self.hi is None else self.hi}{rb}"


def _allowed(value: Any, rule: Any) -> bool:
    if rule is None:
        return value is None
    if isinstance(rule, Interval):
        return value in rule
    if isinstance(rule, (set, frozenset, tuple, list)):
        return value in rule
    return isinstance(rule, type) and isinstance(value, rule)


def validate_params(component: Any) -> None:
    """Check a component's parameters against its class's ``parameter_constraints`` (name → list of allowed forms:
    an :class:`Interval`, a set of values, a type, or None), as scikit-learn does at the start of ``fit``: an
    invalid option fails with a message naming it, before any work."""
    for name, rules in getattr(type(component), "parameter_constraints", {}).items():
        value = getattr(component, name)
        if not any(_allowed(value, rule) for rule in rules):
            forms = " or ".join(sorted(repr(r) if not isinstance(r, set) else "one of " + ", ".join(map(repr, sorted(r, key=str))) for r in rules))
            raise ValueError(f"{type(component).__name__}: {name}={value!r} is invalid; expected {forms}")

"""One constraint vocabulary for plugin parameters and command-line options, in scikit-learn's idiom.

A constraint list names the forms a value may take (any one of them): an :class:`Interval`, a set of values or
:class:`StrOptions`, a type, None, or a free-form :class:`Check`. Plugins declare ``parameter_constraints`` (name →
forms) and call :func:`validate_params` at the start of ``fit`` (``config.check_plugins`` runs the same check before
a run starts); ``command_checks`` checks each command's options against its tables with :func:`check_options`. A
component used before ``fit`` raises :class:`NotFittedError` (scikit-learn's own class, so
``except sklearn.exceptions.NotFittedError`` catches it too)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from sklearn.exceptions import NotFittedError

__all__ = [
    "NotFittedError",
    "ValidationError",
    "check_is_fitted",
    "Interval",
    "StrOptions",
    "Options",
    "Check",
    "NONE",
    "as_constraint",
    "validate_params",
    "check_options",
]


class ValidationError(ValueError):
    """An option's or parameter's value is invalid; the message names it and says what it accepts."""


def check_is_fitted(component: Any, *attributes: str) -> None:
    """Raise :class:`NotFittedError` unless ``component`` has every learned attribute in ``attributes``."""
    missing = [a for a in attributes if not hasattr(component, a)]
    if missing:
        raise NotFittedError(f"{type(component).__name__} is not fitted yet (no {missing[0]}): call fit (or fit_predict / fit_transform) first")


# ------------------------------------------------------------------------------------------------ constraints
class Interval:
    """A numeric range: ``Interval(0, None)`` is x > 0 (open), ``closed="left"`` makes it x >= lo, ``"right"``
    x <= hi, ``"both"`` lo <= x <= hi; ``None`` leaves a side unbounded; integers only with ``integer=True``."""

    def __init__(self, lo: float | None, hi: float | None, closed: str = "neither", integer: bool = False) -> None:
        if closed not in ("neither", "left", "right", "both"):
            raise ValueError(f"Interval: closed={closed!r}; expected 'neither', 'left', 'right' or 'both'")
        self.lo, self.hi, self.closed, self.integer = lo, hi, closed, integer

    def is_satisfied_by(self, x: Any) -> bool:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or (self.integer and not isinstance(x, int)):
            return False
        left_ok = self.lo is None or (x >= self.lo if self.closed in ("left", "both") else x > self.lo)
        right_ok = self.hi is None or (x <= self.hi if self.closed in ("right", "both") else x < self.hi)
        return left_ok and right_ok

    __contains__ = is_satisfied_by

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        lo_in, hi_in = self.closed in ("left", "both"), self.closed in ("right", "both")
        if self.lo is None and self.hi is None:
            return kind
        if self.hi is None:
            return f"{kind} {'≥' if lo_in else '>'} {self.lo}"
        if self.lo is None:
            return f"{kind} {'≤' if hi_in else '<'} {self.hi}"
        return f"{kind} in {'[' if lo_in else '('}{self.lo}, {self.hi}{']' if hi_in else ')'}"

    __repr__ = __str__


class Options:
    """One of a fixed set of values."""

    def __init__(self, options: Iterable[Any]):
        self.options = tuple(sorted(options, key=str)) if isinstance(options, (set, frozenset)) else tuple(options)

    def is_satisfied_by(self, value: Any) -> bool:
        try:
            return value in self.options
        except (TypeError, ValueError):  # an unhashable value, an array (ambiguous truth)
            return False

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


class StrOptions(Options):
    """One of a fixed set of strings."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.options

    def __str__(self) -> str:
        return " or ".join(repr(o) for o in self.options)


class _InstanceOf:
    def __init__(self, type_: type):
        self.type = type_

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, self.type)

    def __str__(self) -> str:
        return f"a {self.type.__name__}"


class Check:
    """A free-form constraint: ``func(value)`` returns None when the value is fine, else the reason it is not."""

    def __init__(self, func: Callable[[Any], str | None], description: str):
        self.func, self.description = func, description
        self.reason: str | None = None

    def is_satisfied_by(self, value: Any) -> bool:
        self.reason = self.func(value)
        return self.reason is None

    def __str__(self) -> str:
        return self.reason or self.description


class _NoneOK:
    def is_satisfied_by(self, value: Any) -> bool:
        return value is None

    def __str__(self) -> str:
        return "None"


#: The constraint "unset" (the value None).
NONE = _NoneOK()


def as_constraint(rule: Any) -> Any:
    """The constraint object for one form of a constraint list: None, a set/tuple/list of values, a type, or
    anything with ``is_satisfied_by`` (:class:`Interval`, :class:`StrOptions`, :class:`Check`)."""
    if rule is None:
        return NONE
    if hasattr(rule, "is_satisfied_by"):
        return rule
    if isinstance(rule, (set, frozenset, tuple, list)):
        return Options(rule)
    if isinstance(rule, type):
        return _InstanceOf(rule)
    raise TypeError(f"not a constraint: {rule!r}")


def _violation(value: Any, rules: Iterable[Any]) -> list[Any] | None:
    """None when ``value`` satisfies one of ``rules``, else the constraint objects (to describe what is allowed)."""
    constraints = [as_constraint(r) for r in rules]
    return None if any(c.is_satisfied_by(value) for c in constraints) else constraints


def validate_params(component: Any) -> None:
    """Check a component's parameters against its class's ``parameter_constraints``, as scikit-learn does at the
    start of ``fit``: an invalid value fails with a :class:`ValidationError` (a ValueError) naming the parameter and
    what it accepts, before any work."""
    for name, rules in getattr(type(component), "parameter_constraints", {}).items():
        value = getattr(component, name)
        allowed = _violation(value, rules)
        if allowed is not None:
            forms = " or ".join(sorted(str(c) for c in allowed))
            raise ValidationError(f"{type(component).__name__}: {name}={value!r} is invalid; expected {forms}")


def check_options(params: Mapping[str, Any], constraints: Mapping[str, list[Any]], prefix: str = "--") -> None:
    """Raise :class:`ValidationError` for the first option in ``constraints`` whose value in ``params`` satisfies
    none of its constraints (options absent from ``params`` are skipped); the message names the option as typed
    (``prefix`` + name) and what it accepts (an "unset" alternative is not listed)."""
    for name, rules in constraints.items():
        if name not in params:
            continue
        value = params[name]
        allowed = _violation(value, rules)
        if allowed is not None:
            shown = [str(c) for c in allowed if c is not NONE]
            raise ValidationError(f"{prefix}{name} {_show(value)}: {'; '.join(shown)}")


def _show(value: Any) -> str:
    return "''" if value == "" else str(value)

"""Checks shared by every plugin, in scikit-learn's idiom: a component used before ``fit`` raises
:class:`NotFittedError` (scikit-learn's own class, so ``except sklearn.exceptions.NotFittedError`` catches it too)."""

from __future__ import annotations

from typing import Any

from sklearn.exceptions import NotFittedError

__all__ = ["NotFittedError", "check_is_fitted"]


def check_is_fitted(component: Any, *attributes: str) -> None:
    """Raise :class:`NotFittedError` unless ``component`` has every learned attribute in ``attributes``."""
    missing = [a for a in attributes if not hasattr(component, a)]
    if missing:
        raise NotFittedError(f"{type(component).__name__} is not fitted yet (no {missing[0]}): call fit (or fit_predict / fit_transform) first")

"""One constraint vocabulary (``validation``) for plugin parameters and command-line options: the same Interval
checks both, and each failure names the value and what is accepted."""

from __future__ import annotations

import pytest

from anomaly_clustering import command_checks, validation
from anomaly_clustering.plugins.common.clusterers import KMeansClusterer
from anomaly_clustering.plugins.common.threshold import FixedThreshold
from anomaly_clustering.validation import NONE, Interval, StrOptions, ValidationError, check_options, validate_params


def test_command_checks_use_the_same_interval() -> None:
    assert command_checks.Interval is validation.Interval and command_checks.ValidationError is ValidationError
    assert isinstance(command_checks.INPUT_SIZE, Interval)


@pytest.mark.parametrize(
    "interval,inside,outside,text",
    [
        (Interval(0, None), [1e-9, 5], [0, -1, True, "1"], "a number > 0"),
        (Interval(1, None, "left", integer=True), [1, 7], [0, 1.5, False], "an integer ≥ 1"),
        (Interval(None, 1, "right"), [1, -3.5], [1.01], "a number ≤ 1"),
        (Interval(32, 8192, "both", integer=True), [32, 8192], [31, 8193, 64.0], "an integer in [32, 8192]"),
        (Interval(0, 1), [0.5], [0, 1], "a number in (0, 1)"),
        (Interval(None, None), [-1e9, 3], [None, "x"], "a number"),
    ],
)
def test_interval(interval, inside, outside, text) -> None:
    assert all(v in interval and interval.is_satisfied_by(v) for v in inside)
    assert not any(interval.is_satisfied_by(v) for v in outside)
    assert str(interval) == text


def test_plugin_parameters_fail_naming_the_parameter_and_the_forms() -> None:
    with pytest.raises(ValidationError, match=r"KMeansClusterer: n_clusters=0 is invalid; expected an integer ≥ 1"):
        validate_params(KMeansClusterer(n_clusters=0))
    with pytest.raises(ValueError, match=r"backend='x' is invalid; expected one of 'auto', 'faiss', 'minibatch', 'sklearn'"):
        validate_params(KMeansClusterer(backend="x"))
    with pytest.raises(ValueError, match=r"relative=3 is invalid; expected a bool"):
        validate_params(FixedThreshold(relative=3))
    validate_params(KMeansClusterer(n_clusters=3))


def test_options_fail_naming_the_option_as_typed() -> None:
    table = {"n_clusters": [Interval(1, None, "left", integer=True), StrOptions(["auto"])], "seed": [NONE, command_checks.SEED]}
    check_options({"n_clusters": "auto", "seed": None}, table)
    with pytest.raises(ValidationError, match=r"^--n_clusters 0: an integer ≥ 1; 'auto'$"):
        check_options({"n_clusters": 0}, table)
    with pytest.raises(ValidationError, match=r"^--seed -1: an integer in \[0, 4294967295\]$"):
        check_options({"seed": -1}, table)

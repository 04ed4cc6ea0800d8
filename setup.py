"""Package discovery for setuptools: the built-in plugins in ``plugins/`` install as ``anomaly_clustering.plugins``
(never as a top-level ``plugins`` module) and the YAML presets in ``configs/`` as ``anomaly_clustering.configs``.
Everything else lives in pyproject.toml."""

from setuptools import find_packages, setup

packages = (
    find_packages(include=["anomaly_clustering", "anomaly_clustering.*"])
    + ["anomaly_clustering.plugins"]
    + [f"anomaly_clustering.plugins.{p}" for p in find_packages("plugins")]
    + ["anomaly_clustering.configs"]
)
setup(packages=packages)

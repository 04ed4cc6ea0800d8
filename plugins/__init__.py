"""Built-in plugins, installed as ``anomaly_clustering.plugins`` and registered through the same entry-point groups
a third-party package uses (see pyproject.toml). One folder per method family."""

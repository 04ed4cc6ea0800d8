"""Short functions in the core package: none in ``anomaly_clustering/`` may exceed ``MAX_LINES`` lines (from its
``def`` line to its last line, decorators excluded), so that a long one cannot creep back in."""

from __future__ import annotations

import ast
from pathlib import Path

import anomaly_clustering

MAX_LINES = 60
PACKAGE = Path(anomaly_clustering.__file__).parent


def function_lengths(root: Path) -> list[tuple[int, str]]:
    """(length in lines, "file:line name") of every function and method under ``root``, longest first."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def test_no_function_in_the_core_package_is_longer_than_the_limit() -> None:
    lengths = function_lengths(PACKAGE)
    assert len(lengths) > 100  # the walk found the package's functions (not an empty folder)
    too_long = [f"{where} ({n} lines)" for n, where in lengths if n > MAX_LINES]
    assert not too_long, f"functions over {MAX_LINES} lines: " + "; ".join(too_long)


def test_the_measure_counts_a_long_function(tmp_path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(f"def long():\n{body}\n\n\ndef short():\n    return 1\n")
    assert function_lengths(tmp_path / "pkg") == [(MAX_LINES + 1, "pkg/m.py:1 long"), (2, f"pkg/m.py:{MAX_LINES + 4} short")]

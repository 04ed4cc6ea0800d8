"""The suite's summary over several saved runs: `anomaly-cluster benchmark`'s table, worst set, mean g and
leave-one-set-out check, recomputed from its ``results.jsonl`` files (e.g. presets measured in different sessions).

    python benchmarks/suite_summary.py benchmarks/results/suite-fcavae-cpu-2026-12-01.jsonl \
        benchmarks/results/suite-multiview-all-cpu-2026-12-02.jsonl [--localizers fca-vae] [--classifiers a,b]

A row measured in more than one file (same set, protocol, localizer, classifier, seed and K mode) is taken from the
last file named.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load_rows(files: list[str]) -> list[dict]:
    """Every row of the files, the last file's row winning where the same run was measured twice."""
    rows: dict[tuple, dict] = {}
    for name in files:
        for line in Path(name).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                key = (r["data"], r.get("protocol"), r["localizer"], r["classifier"], r.get("seed", 0), r.get("k_mode", "given"))
                rows[key] = r
    return list(rows.values())


def main() -> None:
    from anomaly_clustering.benchmarking import FLOOR, format_summary, summarize

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="results.jsonl files of `anomaly-cluster benchmark`")
    ap.add_argument("--localizers", default=None, help="comma-separated: keep these localizers only")
    ap.add_argument("--classifiers", default=None, help=f"comma-separated: keep these classifiers only ({FLOOR}, the floor, is always kept)")
    args = ap.parse_args()
    rows = load_rows(args.results)
    if args.localizers:
        rows = [r for r in rows if r["localizer"] in args.localizers.split(",")]
    if args.classifiers:
        rows = [r for r in rows if r["classifier"] in {FLOOR, *args.classifiers.split(",")}]
    print(format_summary(summarize(rows)))


if __name__ == "__main__":
    main()

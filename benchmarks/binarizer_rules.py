"""Binarizer rules on the maps of finished suite runs: what each makes of the masks, and whether the clustering's
inputs move (issue #19, "masks that mean something").

    python benchmarks/binarizer_rules.py --benchmark OUT [--suite benchmarks/suite.yaml] [--data DATA] \
        [--rules 'hysteresis' 'hysteresis:{"peak_fraction": 0.8}' 'otsu'] [--out rules.json]

For each set's runs of ``--classifier`` (one per seed; the masks do not depend on K), the run's saved anomaly maps
(``records/maps``) are binarized afresh by every rule (``name`` or ``name:{json options}``, built by the plugin
registry as a run builds them; ``own``: the run's own binarizer, which gives back the run's masks), and scored as ``run_masks.py`` scores a run: the share of good images left empty,
the share of anomalous images given a region, the mean IoU / F1 of the anomalous images' masks against the ground
truth. ``same regions`` is the share of seeds on which every image keeps its verdict (a region or none) of the
run's own binarizer: the default classifier reads the regions only through that verdict (its crop gate and its
normal group), so a rule that keeps it leaves the clustering as it is. Seed-free per map: the maps carry the seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_paths import REPO, data_root  # noqa: E402
from localization_quality import mask_scores  # noqa: E402
from run_masks import run_images, truth_and_flags  # noqa: E402


def parse_rule(text: str, run: Path | None = None) -> tuple[str, dict]:
    """``name`` or ``name:{json}`` → (registry name, options); ``own``: the binarizer ``run`` was fitted with (its
    ``config.yaml``)."""
    if text == "own":
        if run is None:
            raise ValueError("the rule 'own' needs the run whose binarizer it names")
        spec = dict(yaml.safe_load((run / "config.yaml").read_text())["binarizer"])
        return spec.pop("name"), spec
    name, _, options = text.partition(":")
    return name, (json.loads(options) if options else {})


def run_inputs(run: Path, data: Path):
    """(images, maps record, ground-truth masks at map size or None, anomalous flags, the run's own masks) of one run."""
    from anomaly_clustering.records import AnomalyMaps
    from anomaly_clustering.store import load_record

    images, gt, own = run_images(run, data)
    maps = load_record(run / "records" / "maps", AnomalyMaps)
    truth, is_anomalous = truth_and_flags(gt, np.asarray(maps.maps).shape[1:])
    return images, maps, truth, is_anomalous, own


def score_rules(run: Path, data: Path, rules: list[str]) -> dict[str, dict]:
    """Per rule, :func:`mask_scores` of its masks on one run's maps and whether every verdict matches the run's."""
    from anomaly_clustering.registry import create

    images, maps, truth, is_anomalous, own = run_inputs(run, data)
    verdict = own.reshape(len(own), -1).any(1)
    out = {}
    for rule in rules:
        name, options = parse_rule(rule, run)
        masks = np.asarray(create("binarizer", name, **options).fit_transform(maps, images).masks, bool)
        same = bool(np.array_equal(masks.reshape(len(masks), -1).any(1), verdict))
        out[rule] = {**mask_scores(masks, truth, is_anomalous), "same_regions": same}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--benchmark", required=True, help="the --out folder of an anomaly-cluster benchmark run")
    ap.add_argument("--classifier", default="multiview-all-normal-first", help="whose runs' maps to read")
    ap.add_argument("--suite", default=str(REPO / "benchmarks" / "suite.yaml"))
    ap.add_argument("--data", default=None, help="the folder the suite's paths are relative to")
    ap.add_argument("--rules", nargs="+", default=["own", "hysteresis", "otsu"])
    ap.add_argument("--out", default=None, help="JSON file for the rows")
    args = ap.parse_args()
    from anomaly_clustering.benchmarking import load_suite

    folders = {s.name: Path(s.data) for s in load_suite(args.suite, str(args.data or data_root()))}
    rows = [json.loads(line) for line in open(Path(args.benchmark) / "results.jsonl")]
    runs: dict[str, list[Path]] = {}
    for row in rows:
        if row["classifier"] == args.classifier and row.get("k_mode", "given") == "given":
            runs.setdefault(row["data"], []).append(Path(row["run"]))
    table = {s: [score_rules(r, folders[s], args.rules) for r in rs] for s, rs in sorted(runs.items())}
    print("| set | rule | seeds | good images empty % | anomalous flagged % | mean IoU % | mean F1 % | same regions |")
    print("|---|---|---|---|---|---|---|---|")
    for s, per_seed in table.items():
        for rule in args.rules:
            rs = [p[rule] for p in per_seed]

            def cell(k: str) -> str:
                v = [r[k] for r in rs if r[k] is not None]
                return f"{np.mean(v):.1f} ± {np.std(v):.1f}" if v else "–"
            same = sum(r["same_regions"] for r in rs)
            print(f"| {s} | `{rule}` | {len(rs)} | {cell('empty_good')} | {cell('flagged_anomalous')} | {cell('iou')} | {cell('f1')} | {same}/{len(rs)} |")
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()

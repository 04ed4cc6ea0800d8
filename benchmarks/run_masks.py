"""What the masks of finished ``anomaly-cluster benchmark`` runs mean: per set × classifier (binarizer), the share of
good images with an empty mask, the share of anomalous images given a region, and the mean IoU / F1 of the masks of
anomalous images against the ground truth (mean ± std over the seeds' runs). ``--image_scores``: also the image
AUROC of every image-score rule of ``mutual_scores_masks.py`` on the runs' saved maps (sets with good images).

    python benchmarks/run_masks.py --benchmark runs/benchmark --classifiers anomaly-context,multiview-anomaly
    python benchmarks/run_masks.py --benchmark runs/benchmark --classifiers average --image_scores

Reads each run's saved masks (``records/regions/masks.npy``) and image list (``clusters.csv``); the ground truth is
found beside the images (MVTec layout). Data: ``--data`` or ``$ANOMALY_CLUSTERING_DATA``, else ``../shared/data``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_paths import REPO, data_root
from localization_quality import mask_scores


def run_images(run: Path, data: Path):
    """(the run's images in its own order — the order of its maps and masks —, their ground truth, the run's masks)."""
    from anomaly_clustering.data import load_ground_truth, load_image_set

    names = [row["image"] for row in csv.DictReader(open(run / "clusters.csv"))]
    images = load_image_set(str(data), include=names)
    order = {n: i for i, n in enumerate(images.names)}
    if sorted(order) != sorted(names):
        raise SystemExit(f"{run}: {len(names)} images in clusters.csv, {len(order)} found under {data}")
    images = images.subset([order[n] for n in names])
    masks = np.load(run / "records" / "regions" / "masks.npy").astype(bool)
    return images, load_ground_truth(images), masks


def truth_and_flags(gt, shape: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray]:
    """(ground-truth masks at ``shape``, or None where the set has none; which images are anomalous)."""
    truth = np.stack([gt.load_mask(i, shape) for i in range(len(gt.labels))]).astype(bool) if gt.has_masks else None
    return truth, np.array([lab != "good" for lab in gt.labels])


def run_mask_scores(run: Path, data: Path) -> dict:
    """:func:`mask_scores` of one run folder's masks against the ground truth of its images."""
    _, gt, masks = run_images(run, data)
    truth, is_anom = truth_and_flags(gt, masks.shape[1:])
    return mask_scores(masks, truth, is_anom)


def image_score_aurocs(run: Path) -> dict[str, float]:
    """Image AUROC (good vs the rest, from the folder names) of every image-score rule on one run's saved maps."""
    from mutual_scores_masks import image_rules
    from sklearn.metrics import roc_auc_score

    rows = list(csv.DictReader(open(run / "clusters.csv")))
    is_anom = np.array([not r["image"].startswith("good/") for r in rows])
    if is_anom.all() or not is_anom.any():
        return {}
    maps = np.stack([np.load(run / r["map_file"]) for r in rows]).astype(np.float32)
    return {name: float(roc_auc_score(is_anom, score)) for name, score in image_rules(maps, None).items()}


def print_image_scores(runs: dict[str, list[Path]]) -> None:
    """One row per rule: AUROC-image mean ± std over each set's runs, and the worst set's mean; best worst case first."""
    table = {s: [image_score_aurocs(r) for r in rs] for s, rs in runs.items()}
    table = {s: v for s, v in table.items() if v and v[0]}
    sets = sorted(table)
    rules = list(next(iter(table.values()))[0]) if table else []
    worst = {rule: min(np.mean([a[rule] for a in table[s]]) for s in sets) for rule in rules}
    print("\n| image score | " + " | ".join(f"{s} AUROC-image %" for s in sets) + " | worst set |")
    print("|---|" + "---|" * (len(sets) + 1))
    for rule in sorted(rules, key=lambda r: -worst[r]):
        cells = [f"{100 * np.mean([a[rule] for a in table[s]]):.1f} ± {100 * np.std([a[rule] for a in table[s]]):.1f}" for s in sets]
        print(f"| {rule} | " + " | ".join(cells) + f" | {100 * worst[rule]:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--benchmark", required=True, help="the --out folder of an anomaly-cluster benchmark run")
    ap.add_argument("--classifiers", default="anomaly-context,multiview-anomaly")
    ap.add_argument("--suite", default=str(REPO / "benchmarks" / "suite.yaml"), help="the suite the benchmark ran (where each set's images are)")
    ap.add_argument("--data", default=None, help="the folder the suite's paths are relative to")
    ap.add_argument("--out", default=None, help="JSON file for the rows")
    ap.add_argument("--image_scores", action="store_true", help="also every image-score rule's AUROC on the runs' saved maps")
    args = ap.parse_args()
    from anomaly_clustering.benchmarking import load_suite

    folders = {s.name: Path(s.data) for s in load_suite(args.suite, str(args.data or data_root()))}
    rows = [json.loads(line) for line in open(Path(args.benchmark) / "results.jsonl")]
    table: dict[tuple[str, str, str], list[dict]] = {}
    for row in rows:
        if row["classifier"] not in args.classifiers.split(",") or row.get("k_mode") == "auto":
            continue  # the masks do not depend on K: one run per seed
        run = Path(row["run"])
        key = (row["data"], row["localizer"], row["classifier"])
        if any(r.get("run") == str(run) for r in table.get(key, [])):
            continue
        scores = run_mask_scores(run, folders[row["data"]])
        table.setdefault(key, []).append({**scores, "run": str(run), "seed": row["seed"]})
    print("| set | localizer | classifier (binarizer) | seeds | good images with an empty mask % | anomalous flagged % | mean IoU % | mean F1 % |")
    print("|---|---|---|---|---|---|---|---|")
    for (s, loc, clf), rs in sorted(table.items()):
        def cell(k: str) -> str:
            v = [r[k] for r in rs if r[k] is not None]
            return f"{np.mean(v):.1f} ± {np.std(v):.1f}" if v else "–"
        print(f"| {s} | {loc} | {clf} | {','.join(str(r['seed']) for r in rs)} | {cell('empty_good')} | {cell('flagged_anomalous')} | {cell('iou')} | {cell('f1')} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"|".join(k): v for k, v in table.items()}, indent=1))
    if args.image_scores:
        runs: dict[str, list[Path]] = {}
        for (s, loc, clf), rs in table.items():
            runs.setdefault(f"{s} ({loc})", []).extend(Path(r["run"]) for r in rs)
        print_image_scores(runs)


if __name__ == "__main__":
    main()

"""The hysteresis gate's exemplar score on finished benchmark runs: how it ranks and gates the images (issue #19).

    python benchmarks/exemplar_gate.py --benchmark OUT [--sets deeppcb] [--banks 400 650] [--out exemplar.json]

For every run folder of the default classifier under ``OUT/runs/<set>`` (any seed, the true-K run), the gate is fitted
on the run's saved maps with ``score="exemplar"`` (``plugins/mutual/exemplar.py``: the RMS difference of each image's
peak window to its nearest window in the set's other images) and, beside it, the run's own gate. Printed per set ×
seed: the image AUROC of the localizer's score and of the exemplar score, the share of good images the Otsu gate
leaves empty and of anomalous images it flags, and the seconds the exemplar score took. Only two-level sets are
scored (the others are listed as skipped: the exemplar score means nothing on grey images).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_paths import data_root  # noqa: E402
from run_masks import run_images  # noqa: E402


def run_maps(run: Path):
    """The run's saved anomaly maps as the binarizer read them."""
    from anomaly_clustering.records import AnomalyMaps

    rec = run / "records" / "maps"
    info = json.loads((rec / "meta.json").read_text())["info"]
    return AnomalyMaps(np.load(rec / "maps.npy"), np.load(rec / "scores.npy"), np.load(rec / "image_sizes.npy"), info)


def gate_row(run: Path, data: Path, bank: int) -> dict | None:
    """AUROC and gate shares of the localizer's score and the exemplar score on one run; None on a grey set."""
    from sklearn.metrics import roc_auc_score

    from anomaly_clustering.plugins.mutual import HysteresisThreshold, exemplar

    images, gt, _ = run_images(run, data)
    if not exemplar.is_two_level(images):
        return None
    maps = run_maps(run)
    anomalous = np.array([label != "good" for label in gt.labels])
    row: dict = {"run": run.parent.name, "bank_images": bank}
    for name, gate in (("image", HysteresisThreshold(score="image")),
                       ("exemplar", HysteresisThreshold(score="exemplar", exemplar_bank_images=bank))):
        start = time.perf_counter()
        gate.fit(maps, images)
        scores = gate.gate_scores(maps, images)
        flagged = scores > gate.gate_
        row[name] = {"auroc_image": float(roc_auc_score(anomalous, scores)) if anomalous.any() and not anomalous.all() else None,
                     "good_empty": float(np.mean(~flagged[~anomalous])) if (~anomalous).any() else None,
                     "anomalous_flagged": float(np.mean(flagged[anomalous])), "seconds": time.perf_counter() - start}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", required=True, help="the --out folder of an anomaly-cluster benchmark run")
    parser.add_argument("--sets", nargs="+", default=["deeppcb"])
    parser.add_argument("--classifier", default="multiview-all-normal-first")
    parser.add_argument("--banks", nargs="+", type=int, default=[400], help="exemplar_bank_images values to measure")
    parser.add_argument("--data_root", default=None)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    import yaml

    suite = yaml.safe_load((Path(__file__).resolve().parent / "suite.yaml").read_text())["sets"]
    root, rows = Path(args.data_root) if args.data_root else data_root(), []
    for name in args.sets:
        runs = sorted(Path(args.benchmark, "runs", name).glob(f"*/seed*/*__{args.classifier}__k[0-9]*"))
        if not runs:
            raise SystemExit(f"no {args.classifier} runs of {name} under {args.benchmark}/runs")
        for run in runs:
            for bank in args.banks:
                row = gate_row(run, root / suite[name]["data"], bank)
                if row is None:
                    print(f"{name}: not a two-level set, skipped")
                    break
                rows.append({"set": name, "seed": run.parent.name, **row})
                im, ex = row["image"], row["exemplar"]
                print(f"{name} {run.parent.name} bank {bank}: AUROC-image {100 * im['auroc_image']:.1f} -> {100 * ex['auroc_image']:.1f}; "
                      f"good empty {100 * im['good_empty']:.1f} -> {100 * ex['good_empty']:.1f} %; anomalous flagged "
                      f"{100 * im['anomalous_flagged']:.1f} -> {100 * ex['anomalous_flagged']:.1f} %; {ex['seconds']:.0f} s", flush=True)
            else:
                continue
            break
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

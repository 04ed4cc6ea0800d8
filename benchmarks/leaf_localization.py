"""Localizers on generated leaves (an object whose place, size and angle vary on a plain background, a spot inside
half of them; :func:`anomaly_clustering.testing.leaf_images`): does the map peak on the defect or on the outline?

    python benchmarks/leaf_localization.py --localizers fca-vae mutual fca-mutual --seeds 0 1 2 --images 48 --size 256

A stand-in for the held-out leaf photographs of issue #19 (FCA+VAE there: image AUROC 0.44, the rim bright in every
map). Per localizer (default options) and seed — the seed draws both the set and the localizer — it prints the share
of defective images whose map peaks within 4 px of the defect, the median outline rise relative to the defect rise
(above each map's median), pixel and image AUROC; then the mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data_paths  # noqa: E402,F401  (offline by default)


def score(maps: np.ndarray, scores: np.ndarray, defects: np.ndarray, rims: np.ndarray) -> dict:
    """Peak-on-defect share, median outline/defect rise, pixel and image AUROC of maps at any size."""
    size = defects.shape[1]
    full = np.stack([ndimage.zoom(m, size / m.shape[0], order=1) for m in maps])
    bad = defects.any((1, 2))
    ratios, on = [], 0
    for i in np.flatnonzero(bad):
        base = np.median(full[i])
        ratios.append(float((full[i][rims[i]].mean() - base) / (full[i][defects[i]].mean() - base)))
        on += bool(ndimage.binary_dilation(defects[i], iterations=4)[np.unravel_index(np.argmax(full[i]), full[i].shape)])
    return {"peak_on_defect": round(100 * on / bad.sum(), 1), "outline_ratio": round(float(np.median(ratios)), 3),
            "auroc_pixel": round(100 * roc_auc_score(defects.ravel(), full.ravel()), 1), "auroc_image": round(100 * roc_auc_score(bad, scores), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--localizers", nargs="*", default=["fca-vae", "mutual", "fca-mutual"])
    ap.add_argument("--option", action="append", default=[], help="name.key=value (JSON value) for one localizer")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from anomaly_clustering import registry, runtime
    from anomaly_clustering.testing import leaf_images

    options: dict[str, dict] = {}
    for kv in args.option:
        key, value = kv.split("=", 1)
        name, opt = key.split(".", 1)
        options.setdefault(name, {})[opt] = json.loads(value) if value[:1] in "0123456789.-[{tfn\"" else value
    rows = []
    with runtime.settings(quiet=True), tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            images, defects, rims = leaf_images(Path(tmp) / f"leaves{seed}", n=args.images, size=args.size, seed=seed)
            for name in args.localizers:
                loc = registry.create("localizer", name, **options.get(name, {}))
                if "seed" in loc.get_params():
                    loc.set_params(seed=seed)
                out = loc.fit_predict(images)
                rows.append({"localizer": name, "seed": seed, **score(out.maps, out.scores, defects, rims)})
                print(json.dumps(rows[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    print_means(rows, args.localizers, ("peak_on_defect", "outline_ratio", "auroc_pixel", "auroc_image"))


#: Column titles of the per-localizer table.
TITLES = {"pro_30": "PRO@0.3", "peak_on_defect": "maps peaking on the defect %", "outline_ratio": "outline rise / defect rise",
          "auroc_pixel": "AUROC-pixel", "auroc_image": "AUROC-image"}


def print_means(rows: list[dict], localizers: list[str], keys: tuple[str, ...]) -> None:
    """One Markdown row per localizer: the mean ± std over its rows (seeds) of each of ``keys``."""
    print("| localizer | " + " | ".join(TITLES[k] for k in keys) + " |\n|---|" + "---|" * len(keys))
    for name in localizers:
        group = [r for r in rows if r["localizer"] == name]
        digits = {k: 3 if k == "outline_ratio" else 1 for k in keys}
        print(f"| {name} | " + " | ".join(f"{np.mean([r[k] for r in group]):.{digits[k]}f} ± {np.std([r[k] for r in group]):.{digits[k]}f}"
                                          for k in keys) + " |")


if __name__ == "__main__":
    main()

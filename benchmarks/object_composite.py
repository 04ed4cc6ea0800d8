"""Localizers on real defects inside an object on a plain background (issue #19's held-out leaves, built from real data).

    python benchmarks/object_composite.py --set mtd --images 300 --seeds 0 1 2 --localizers fca-vae fca-nearest mutual
    python benchmarks/object_composite.py --set mtd --write OBJ --good 300       # a labelled object set, for clustering:
    anomaly-cluster benchmark --suite benchmarks/suite-objects.yaml --data_root OBJ --seeds 0,1,2

The generated leaves (``leaf_localization.py``) do not reproduce what issue #19 saw on photographed leaves (the
object's rim brighter than its symptoms, image AUROC below chance): their spot is a strong colour change. Here each
image of a labelled texture set with pixel masks (MTD by default: grey tiles with subtle real defects) becomes an
object: the tile, resized so that an ellipse of random size, angle and place (``composite``) covers its middle, is
cut to that ellipse and pasted on a plain light background; its mask is moved and cut the same way. A defective
image whose defect loses more than half of its pixels to the cut, or whose mask is empty, is left out (the count is printed), so every
defective image still shows its defect. Per localizer (default options; its ``seed`` is the run's) and seed (which
draws both the compositions and the localizer), it prints PRO@0.3, pixel and image AUROC at the map grid, the
share of defective images whose map peaks within 4 px of the defect and the median outline rise relative to the
defect rise (above each map's median); then the mean ± std over seeds. Data by ``--data`` or
``$ANOMALY_CLUSTERING_DATA``, else ``../shared/data``.

With ``--write OBJ`` it writes one such set instead (every defective image and ``--good`` good ones drawn with the
first seed, composed with it) as ``OBJ/<set>_objects`` in MVTec AD layout, masks included: a labelled set of the
objects-on-a-background kind for the clustering suite (``benchmarks/suite-objects.yaml``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_paths import data_root  # noqa: E402  (offline by default)
from leaf_localization import print_means, score as outline_scores  # noqa: E402

BACKGROUND = 0.85  # a light, plain background, as in photographs of single leaves


def composite(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(RGB object image in [0, 1], its defect mask, its outline band, the share of the defect kept), images
    ``size``×``size``: ``image`` (H×W×3 in [0, 1]) and ``mask`` resized to the square that holds a random ellipse,
    cut to it, on a plain background."""
    from PIL import Image

    a, b = rng.uniform(0.32, 0.42) * size, rng.uniform(0.24, 0.34) * size
    angle = rng.uniform(0, np.pi)
    cy, cx = size / 2 + rng.uniform(-0.08, 0.08, 2) * size
    side = int(round(2 * max(a, b)))
    tex = np.asarray(Image.fromarray((image * 255).astype(np.uint8)).resize((side, side), Image.BILINEAR), np.float32) / 255
    dm = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((side, side), Image.NEAREST)) > 127
    canvas = np.full((size, size, 3), BACKGROUND, np.float32)
    placed = np.zeros((size, size), bool)
    y0, x0 = int(round(cy - side / 2)), int(round(cx - side / 2))
    ys, xs = slice(max(0, y0), min(size, y0 + side)), slice(max(0, x0), min(size, x0 + side))
    ty, tx = slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0)
    layer = canvas.copy()
    layer[ys, xs] = tex[ty, tx]
    placed[ys, xs] = dm[ty, tx]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / a
    v = (-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)) / b
    r = np.sqrt(u * u + v * v)
    inside = r < 1
    out = np.where(inside[..., None], layer, canvas) + rng.normal(0, 0.01, canvas.shape).astype(np.float32)
    kept = float((placed & inside).sum() / max(1, dm.sum()))
    return np.clip(out, 0, 1), placed & inside, np.abs(r - 1) < 0.04, kept


def build(source, gt, folder: Path, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Write the object versions of ``source``'s images in MVTec layout under ``folder``; (defect masks, outline
    bands, number left out)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    defects, rims, dropped = [], [], 0
    for i, path in enumerate(source.paths):
        img = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
        mask = gt.load_mask(i, img.shape[:2]) if gt.has_masks else np.zeros(img.shape[:2], bool)
        obj, m, rim, kept = composite(img, mask, size, rng)
        kind = Path(path).parent.name
        if kind != "good" and (not mask.any() or kept < 0.5):  # MTD holds 4 defective tiles with empty masks
            dropped += 1
            continue
        (folder / "test" / kind).mkdir(parents=True, exist_ok=True)
        stem = Path(path).stem
        Image.fromarray((obj * 255).astype(np.uint8)).save(folder / "test" / kind / f"{stem}.png")
        if kind != "good":
            (folder / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(m.astype(np.uint8) * 255).save(folder / "ground_truth" / kind / f"{stem}_mask.png")
        defects.append(m)
        rims.append(rim)
    return np.stack(defects), np.stack(rims), dropped


def write_object_set(source, labels: list[str], folder: Path, good: int, size: int, seed: int) -> None:
    """Every defective image of ``source`` and ``good`` of its good ones (drawn with ``seed``) as objects under
    ``folder`` (MVTec AD layout, masks included); prints what was kept per type."""
    from anomaly_clustering.data import load_ground_truth, load_image_set

    labels_ = np.asarray(labels)
    normal = np.flatnonzero(labels_ == "good")
    keep = np.sort(np.concatenate([np.flatnonzero(labels_ != "good"),
                                   np.random.default_rng(seed).choice(normal, min(good, len(normal)), replace=False)]))
    chosen = source.subset(keep.tolist())
    _, _, dropped = build(chosen, load_ground_truth(chosen), folder, size, seed)
    kinds = load_ground_truth(load_image_set(folder / "test")).labels
    counts = {k: int(np.sum(np.asarray(kinds) == k)) for k in sorted(set(kinds))}
    print(f"{folder}: {len(kinds)} images, {dropped} left out (defect cut by the outline or no mask); per type {counts}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(data_root()))
    ap.add_argument("--set", default="mtd", help="a set with pixel masks")
    ap.add_argument("--images", type=int, default=300, help="class-stratified subset of its test images")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--localizers", nargs="*", default=["fca-vae", "fca-vae-calibrated", "fca-nearest", "mutual"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--out", default=None)
    ap.add_argument("--write", default=None, help="folder: write one labelled object set there and stop")
    ap.add_argument("--good", type=int, default=300, help="with --write: how many good images join every defective one")
    args = ap.parse_args()
    from anomaly_clustering import registry, runtime
    from anomaly_clustering.data import load_ground_truth, load_image_set
    from anomaly_clustering.metrics import localization_scores
    from localization_quality import stratified

    source = load_image_set(Path(args.data) / args.set / "test")
    labels = list(load_ground_truth(source).labels)
    if args.write:
        write_object_set(source, labels, Path(args.write) / f"{args.set}_objects", args.good, args.size, args.seeds[0])
        return
    if args.images < len(source):
        source = source.subset(stratified(labels, args.images).tolist())
    gt_source = load_ground_truth(source)
    rows = []
    with runtime.settings(quiet=True), tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            folder = Path(tmp) / f"objects{seed}"
            defects, rims, dropped = build(source, gt_source, folder, args.size, seed)
            images = load_image_set(folder / "test")
            gt = load_ground_truth(images)
            order = {Path(p).stem: j for j, p in enumerate(images.paths)}  # load order may differ from build order
            stems = [Path(p).stem for p in source.paths]
            assert len(set(stems)) == len(stems), "image names must be unique across types"
            print(f"seed {seed}: {len(images)} object images, {int(defects.any((1, 2)).sum())} defective, {dropped} left out", flush=True)
            for name in args.localizers:
                loc = registry.create("localizer", name)
                if "seed" in loc.get_params():
                    loc.set_params(seed=seed)
                out = loc.fit_predict(images)
                grid = out.maps.shape[1:]
                masks = np.stack([gt.load_mask(i, grid) for i in range(len(images))])
                loc_scores = localization_scores(out.maps, out.scores, masks, masks.any((1, 2)))
                idx = np.array([order[s] for s in stems if s in order])  # the images build() kept, in its order
                row = {"localizer": name, "seed": seed, "n": len(images), "pro_30": round(100 * loc_scores.pro_30, 1),
                       **outline_scores(out.maps[idx], out.scores[idx], defects, rims)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"\n{args.set} as objects, {args.images} images, {args.size} px, seeds {args.seeds}\n")
    print_means(rows, args.localizers, ("pro_30", "auroc_pixel", "auroc_image", "peak_on_defect", "outline_ratio"))


if __name__ == "__main__":
    main()

"""Localization quality (Blind-LCA Table 2 protocol): PRO@0.3, pixel AUROC and image AUROC of any localizer on whole
test sets or stratified subsets (good images included, no labels used), beside the paper's MTD figures.

    ANOMALY_CLUSTERING_CACHE=/work/cache nice python benchmarks/localization_quality.py --sets mtd --localizers fca fca-vae
    python benchmarks/localization_quality.py --localizers fca fca-vae musc patchcore patchcore@reference --subset 200 \
        --option input_size=256

``NAME@reference`` fits the localizer on the set's clean ``train/good`` (skipped where a set has none); every other
localizer runs blind, fitted on the (sub)set it scores.

Maps are upsampled bilinearly from the feature grid to ``--eval_size`` and compared with the masks resized (nearest)
to that size. NEU masks are filled VOC boxes (not pixel masks); mvtec_bottle here has no masks (image AUROC only).
Results are also written as JSON (``--out``) so runs of single localizers can be merged with ``--merge``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")  # benchmarks use local weights only, never a hub download

PAPER_MTD = {"fca": (72.15, 74.48, 80.29), "fca-vae": (75.53, 75.32, 83.87)}  # PRO, AUROC_p, AUROC_i (Table 2)
DATA = Path("/work/shared/data")
NOTES = {"mtd": "pixel masks", "neu_det": "box masks", "mvtec_bottle": "no masks: image AUROC only"}


def stratified(labels: list[str], n: int, seed: int = 0) -> np.ndarray:
    """Indices of about ``n`` images, each type kept in its share of the set (at least one per type), sorted."""
    labels = np.asarray(labels)
    rng, keep = np.random.default_rng(seed), []
    for c in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(n * len(idx) / len(labels))))
        keep.append(rng.choice(idx, min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def evaluate(set_name: str, localizer: str, eval_size: int, options: dict, every: int = 1, maps_dir: str | None = None, subset: int = 0) -> dict | None:
    from anomaly_clustering.data import load_ground_truth, load_image_set
    from anomaly_clustering.metrics import localization_scores
    from anomaly_clustering.registry import create  # noqa: F401  (plugin lookup by name)

    images = load_image_set(DATA / set_name / "test")
    gt = load_ground_truth(images)
    total = len(images)
    if subset and subset < len(images):
        keep = stratified(list(gt.labels), subset)
        images = images.subset(keep.tolist())
        gt = type(gt)(tuple(gt.labels[i] for i in keep), tuple(gt.mask_paths[i] for i in keep), gt.has_masks)
    is_anomalous = np.array([lab not in ("good", "ok", "normal") for lab in gt.labels])
    name, _, mode = localizer.partition("@")
    normal = None
    if mode == "reference":
        if not (DATA / set_name / "train" / "good").is_dir():
            return None
        normal = load_image_set(DATA / set_name / "train" / "good")
    own = {k: v for k, v in options.items() if "." not in k}  # "name.key=value" options go to that localizer only
    own.update({k.split(".", 1)[1]: v for k, v in options.items() if k.startswith(name + ".")})
    loc = create("localizer", name, **own)
    start = time.perf_counter()
    if every == 1:
        out = loc.fit_predict(images, normal)
    else:  # fit on the whole set (the VAE sees every image), score every k-th image of each class
        keep = np.sort(np.concatenate([np.flatnonzero(np.array(gt.labels) == c)[::every] for c in sorted(set(gt.labels))]))
        out = score_subset(loc.fit(images), images, keep)
        images, is_anomalous = images.subset(keep), is_anomalous[keep]
        gt = type(gt)(tuple(gt.labels[i] for i in keep), tuple(gt.mask_paths[i] for i in keep), gt.has_masks)
    seconds = time.perf_counter() - start
    if maps_dir:  # keep the maps, so a metric can be recomputed without re-running the localizer
        Path(maps_dir).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(Path(maps_dir) / f"{set_name}_{localizer}_every{every}.npz", maps=out.maps, scores=out.scores, names=np.array(images.names))
    maps = F.interpolate(torch.from_numpy(np.asarray(out.maps, np.float32))[:, None], size=(eval_size, eval_size), mode="bilinear", align_corners=False)[:, 0].numpy()
    masks = np.stack([gt.load_mask(i, (eval_size, eval_size)) for i in range(len(images))]) if gt.has_masks else None
    s = localization_scores(maps, out.scores, masks, is_anomalous)
    pct = lambda v: None if v is None else round(100 * v, 2)  # noqa: E731
    return {
        "set": set_name, "localizer": localizer, "images": len(images), "of": total, "anomalous": int(is_anomalous.sum()),
        "pro": pct(s.pro_30), "auroc_pixel": pct(s.auroc_pixel), "auroc_image": pct(s.auroc_image),
        "backbone": out.info.get("backbone"), "input_size": out.info.get("input_size") or getattr(loc, "input_size", None), "seconds": round(seconds, 1), "every": every,
        "timings": out.info.get("timings"), "vae_loss": out.info.get("vae_loss"), "options": own,
    }


def score_subset(loc, images, keep: np.ndarray):
    """Maps of the images ``keep`` from the whole set's cached features (FCA is per image, so this equals scoring the
    whole set and keeping those rows). Uses the localizer's private per-image scorer: benchmark-only shortcut."""
    from anomaly_clustering.backbones import FeatureArray, extract_features

    full = extract_features(images, loc._spec())
    part = FeatureArray(np.asarray(full.data[keep]), full.spec, full.stride)
    maps, t_fca = loc._score(images.subset(keep), part, loc.__class__.__name__)
    info = {"backbone": loc.backbone, "input_size": loc.input_size, "timings": {**getattr(loc, "fit_timings_", {}), "fca_s": t_fca}}
    if hasattr(loc, "vae_"):
        info["vae_loss"] = [loc.loss_first_, loc.loss_last_]
    return loc._records(images.subset(keep), maps, info)


def table(rows: list[dict]) -> str:
    fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
    lines = ["| set | localizer | backbone @ px | PRO@0.3 | AUROC-pixel | AUROC-image | paper (PRO / AUROC-p / AUROC-i) | images | s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        paper = " / ".join(f"{v:.1f}" for v in PAPER_MTD[r["localizer"]]) + " (WRN50-2)" if r["set"] == "mtd" and r["localizer"] in PAPER_MTD else "–"
        lines.append(
            f"| {r['set']} ({NOTES.get(r['set'], '')}) | {r['localizer']} | {r['backbone']} @ {r['input_size']} | {fmt(r['pro'])} | "
            f"{fmt(r['auroc_pixel'])} | {fmt(r['auroc_image'])} | {paper} | {r['images']}{' of ' + str(r['of']) if r.get('of', r['images']) != r['images'] else ''} | {r['seconds']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="*", default=["mtd", "neu_det", "mvtec_bottle"])
    ap.add_argument("--localizers", nargs="*", default=["fca", "fca-vae"])
    ap.add_argument("--eval_size", type=int, default=256)
    ap.add_argument("--option", action="append", default=[], help="localizer option key=value (e.g. input_size=512), or name.key=value for one localizer")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--subset", type=int, default=0, help="stratified subset of this many images per set (0: all)")
    ap.add_argument("--every", type=int, default=1, help="score every k-th image of each class (fit still sees all)")
    ap.add_argument("--maps_dir", default=None, help="save each run's maps and scores here (.npz)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument("--merge", nargs="*", default=None, help="only print the table of these JSON files")
    args = ap.parse_args()
    if args.merge:
        rows = [r for p in args.merge for r in json.loads(Path(p).read_text())]
        print(table(rows))
        return
    torch.set_num_threads(args.threads)
    options = {}
    for kv in args.option:
        k, v = kv.split("=", 1)
        options[k] = json.loads(v) if v[:1].isdigit() or v[:1] == "." or v in ("true", "false", "null") else v
    rows = []
    for set_name in args.sets:
        for localizer in args.localizers:
            row = evaluate(set_name, localizer, args.eval_size, options, args.every, args.maps_dir, args.subset)
            if row is None:
                continue
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()

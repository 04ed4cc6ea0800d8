"""Localization quality (Blind-LCA Table 2 protocol): PRO@0.3, pixel AUROC and image AUROC of any localizer on whole
test sets or stratified subsets (good images included, no labels used), beside the paper's MTD figures; and, per
binarizer, what its masks mean: the share of defect-free images left with an EMPTY mask and the mean IoU / F1 of the
anomalous images' masks against the ground truth (an empty mask scores 0).

    ANOMALY_CLUSTERING_CACHE=<cache> nice python benchmarks/localization_quality.py --sets mtd --localizers fca fca-vae
    python benchmarks/localization_quality.py --localizers fca fca-vae musc patchcore patchcore@reference --subset 200 \
        --option input_size=256
    python benchmarks/localization_quality.py --sets mtd deeppcb neu_det mvtec_bottle --localizers mutual fca-vae \
        --subset 400 --seeds 0 1 2 --binarizers null-threshold otsu mebin quantile-heuristic

Data: ``--data`` or ``$ANOMALY_CLUSTERING_DATA``, else ``../shared/data`` beside the repository. ``--seeds``: each
localizer with a ``seed`` parameter runs once per seed (rows carry the seed; the table shows mean ± spread).

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
DATA = Path(os.environ.get("ANOMALY_CLUSTERING_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
NOTES = {"mtd": "pixel masks", "neu_det": "box masks", "mvtec_bottle": "no masks: image AUROC only", "deeppcb": "derived masks"}


def stratified(labels: list[str], n: int, seed: int = 0) -> np.ndarray:
    """Indices of about ``n`` images, each type kept in its share of the set (at least one per type), sorted."""
    labels = np.asarray(labels)
    rng, keep = np.random.default_rng(seed), []
    for c in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(n * len(idx) / len(labels))))
        keep.append(rng.choice(idx, min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def mask_scores(pred: np.ndarray, truth: np.ndarray | None, is_anomalous: np.ndarray) -> dict:
    """What binary masks mean: share of defect-free images with an empty mask; mean IoU and F1 (Dice) of the masks
    of anomalous images with a non-empty ground truth (an empty prediction scores 0); share of anomalous images
    given any region."""
    has = pred.reshape(len(pred), -1).any(1)
    out = {"empty_good": None if is_anomalous.all() else round(100 * float(np.mean(~has[~is_anomalous])), 1),
           "flagged_anomalous": None if not is_anomalous.any() else round(100 * float(np.mean(has[is_anomalous])), 1),
           "iou": None, "f1": None}
    if truth is not None:
        rows = np.flatnonzero(is_anomalous & truth.reshape(len(truth), -1).any(1))
        if len(rows):
            p, t = pred[rows].reshape(len(rows), -1), truth[rows].reshape(len(rows), -1)
            inter, union = (p & t).sum(1), (p | t).sum(1)
            out["iou"] = round(100 * float(np.mean(inter / np.maximum(union, 1))), 1)
            out["f1"] = round(100 * float(np.mean(2 * inter / np.maximum(p.sum(1) + t.sum(1), 1))), 1)
    return out


def run_binarizers(names: list[str], out, images, gt, is_anomalous: np.ndarray, options: dict) -> dict:
    """Each binarizer fitted on the localizer's maps of the (sub)set: its :func:`mask_scores` and seconds."""
    from anomaly_clustering.registry import create

    h, w = out.maps.shape[1:]
    truth = np.stack([gt.load_mask(i, (h, w)) for i in range(len(images))]) if gt.has_masks else None
    res = {}
    for name in names:
        own = {k.split(".", 1)[1]: v for k, v in options.items() if k.startswith(name + ".")}
        binarizer = create("binarizer", name, **own)
        start = time.perf_counter()
        regions = binarizer.fit_transform(out, images)
        res[name] = {**mask_scores(np.asarray(regions.masks, bool), truth, is_anomalous), "seconds": round(time.perf_counter() - start, 1)}
    return res


def evaluate(set_name: str, localizer: str, eval_size: int, options: dict, every: int = 1, maps_dir: str | None = None, subset: int = 0,
             seed: int | None = None, binarizers: tuple[str, ...] = ()) -> dict | None:
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
    if seed is not None and "seed" in loc.get_params():
        loc.set_params(seed=seed)
    else:
        seed = None  # deterministic localizer: one row whatever --seeds says
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
        np.savez_compressed(Path(maps_dir) / f"{set_name}_{localizer}_every{every}_seed{seed}.npz", maps=out.maps, scores=out.scores, names=np.array(images.names))
    maps = F.interpolate(torch.from_numpy(np.asarray(out.maps, np.float32))[:, None], size=(eval_size, eval_size), mode="bilinear", align_corners=False)[:, 0].numpy()
    masks = np.stack([gt.load_mask(i, (eval_size, eval_size)) for i in range(len(images))]) if gt.has_masks else None
    s = localization_scores(maps, out.scores, masks, is_anomalous)
    pct = lambda v: None if v is None else round(100 * v, 2)  # noqa: E731
    return {
        "set": set_name, "localizer": localizer, "seed": seed, "images": len(images), "of": total, "anomalous": int(is_anomalous.sum()),
        "pro": pct(s.pro_30), "auroc_pixel": pct(s.auroc_pixel), "auroc_image": pct(s.auroc_image),
        "backbone": out.info.get("backbone"), "input_size": out.info.get("input_size") or getattr(loc, "input_size", None), "seconds": round(seconds, 1), "every": every,
        "timings": out.info.get("timings"), "vae_loss": out.info.get("vae_loss"), "options": own,
        "binarizers": run_binarizers(list(binarizers), out, images, gt, is_anomalous, options) if binarizers else {},
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


def _mean(values: list) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    return f"{np.mean(vals):.1f}" + (f" ± {np.std(vals):.1f}" if len(vals) > 1 else "")


def _groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["set"], r["localizer"]), []).append(r)
    return groups


def table(rows: list[dict]) -> str:
    """One line per (set, localizer): mean ± standard deviation over the seeds that ran."""
    lines = ["| set | localizer | backbone @ px | PRO@0.3 | AUROC-pixel | AUROC-image | paper (PRO / AUROC-p / AUROC-i) | images | seeds | s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (set_name, loc), rs in _groups(rows).items():
        r = rs[0]
        paper = " / ".join(f"{v:.1f}" for v in PAPER_MTD[loc]) + " (WRN50-2)" if set_name == "mtd" and loc in PAPER_MTD else "–"
        seeds = ",".join(str(x["seed"]) for x in rs) if rs[0].get("seed") is not None else "–"
        lines.append(
            f"| {set_name} ({NOTES.get(set_name, '')}) | {loc} | {r['backbone']} @ {r['input_size']} | {_mean([x['pro'] for x in rs])} | "
            f"{_mean([x['auroc_pixel'] for x in rs])} | {_mean([x['auroc_image'] for x in rs])} | {paper} | "
            f"{r['images']}{' of ' + str(r['of']) if r.get('of', r['images']) != r['images'] else ''} | {seeds} | {_mean([x['seconds'] for x in rs])} |"
        )
    return "\n".join(lines)


def binarizer_table(rows: list[dict]) -> str:
    """One line per (set, localizer, binarizer): empty-mask share of good images, IoU / F1 of anomalous images."""
    lines = ["| set | localizer | binarizer | good images with EMPTY mask % | anomalous images flagged % | mean IoU % | mean F1 % |", "|---|---|---|---|---|---|---|"]
    for (set_name, loc), rs in _groups(rows).items():
        for b in rs[0].get("binarizers", {}):
            vals = lambda key: _mean([x["binarizers"][b][key] for x in rs if b in x.get("binarizers", {})])  # noqa: E731
            lines.append(f"| {set_name} | {loc} | {b} | {vals('empty_good')} | {vals('flagged_anomalous')} | {vals('iou')} | {vals('f1')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder holding the sets (default: $ANOMALY_CLUSTERING_DATA or ../shared/data)")
    ap.add_argument("--sets", nargs="*", default=["mtd", "neu_det", "mvtec_bottle", "deeppcb"])
    ap.add_argument("--localizers", nargs="*", default=["fca", "fca-vae"])
    ap.add_argument("--eval_size", type=int, default=256)
    ap.add_argument("--option", action="append", default=[], help="localizer option key=value (e.g. input_size=512, layers=[\"1\",\"2\"]: JSON), or name.key=value for one localizer")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--subset", type=int, default=0, help="stratified subset of this many images per set (0: all)")
    ap.add_argument("--every", type=int, default=1, help="score every k-th image of each class (fit still sees all)")
    ap.add_argument("--maps_dir", default=None, help="save each run's maps and scores here (.npz)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0], help="seeds of localizers that have one (mean ± spread)")
    ap.add_argument("--binarizers", nargs="*", default=[], help="binarizers to score on each localizer's maps (name.key=value options via --option)")
    ap.add_argument("--merge", nargs="*", default=None, help="only print the table of these JSON files")
    args = ap.parse_args()
    global DATA
    DATA = Path(args.data) if args.data else DATA
    if args.merge:
        rows = [r for p in args.merge for r in json.loads(Path(p).read_text())]
        print(table(rows))
        print(binarizer_table(rows))
        return
    torch.set_num_threads(args.threads)
    options = {}
    for kv in args.option:
        k, v = kv.split("=", 1)
        options[k] = json.loads(v) if v[:1].isdigit() or v[:1] in (".", "[") or v in ("true", "false", "null") else v
    rows = []
    for set_name in args.sets:
        for localizer in args.localizers:
            for seed in args.seeds:
                row = evaluate(set_name, localizer, args.eval_size, options, args.every, args.maps_dir, args.subset, seed, tuple(args.binarizers))
                if row is None:
                    break
                rows.append(row)
                print(json.dumps(rows[-1]), flush=True)
                if args.out:
                    Path(args.out).write_text(json.dumps(rows, indent=1))
                if row["seed"] is None:
                    break  # no randomness: one run
    print(table(rows))
    print(binarizer_table(rows))


if __name__ == "__main__":
    main()

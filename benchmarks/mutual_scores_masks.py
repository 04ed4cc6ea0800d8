"""Image-score rules and binarizers measured on SAVED anomaly maps (``localization_quality.py --maps_dir``): which
image score ranks images best in the worst case over the sets, with a leave-one-set-out check, and which binarizer
leaves good images empty while its masks of anomalous images beat Otsu's IoU.

    ANOMALY_CLUSTERING_CACHE=<cache> python benchmarks/localization_quality.py --sets mtd deeppcb mvtec_bottle neu_det \
        --localizers mutual --subset 200 --seeds 0 1 2 --maps_dir maps
    ANOMALY_CLUSTERING_CACHE=<cache> python benchmarks/mutual_scores_masks.py --maps_dir maps --localizer mutual \
        --sets mtd deeppcb mvtec_bottle neu_det --seeds 0 1 2 --subset 200 --out scores_masks.json

The subsets are rebuilt exactly as ``localization_quality.py`` builds them (class-stratified, seed 0), so each saved
map meets its own ground truth; the saved names are checked against them. Image features for the k-NN rules
(RsCIN smoothing, neighbour-relative scores) are the localizer's backbone features mean-pooled over positions, from the
same on-disk cache. Data: ``--data`` or ``$ANOMALY_CLUSTERING_DATA``, else ``../shared/data`` beside the repository.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from localization_quality import mask_scores, stratified

DATA = Path(os.environ.get("ANOMALY_CLUSTERING_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


# -- image-score rules (maps N×H×W float32 → N scores) ------------------------------------------------------------
def _topk(maps: np.ndarray, fraction: float) -> np.ndarray:
    from anomaly_clustering.plugins.mutual.torch_model import topk_mean

    return topk_mean(torch.from_numpy(maps), fraction).numpy()


def _blur_max(maps: np.ndarray, sigma: float) -> np.ndarray:
    from anomaly_clustering.plugins.mutual.torch_model import gaussian_blur

    return gaussian_blur(torch.from_numpy(maps), sigma).flatten(1).amax(1).numpy()


def _region_mean(maps: np.ndarray, mass: bool = False) -> np.ndarray:
    """Mean (or excess mass over the median) of the connected component holding each map's max, cut halfway
    between the map's median and its max."""
    from scipy import ndimage

    out = np.empty(len(maps), np.float32)
    for i, m in enumerate(maps):
        med = float(np.median(m))
        labels, _ = ndimage.label(m > (m.max() + med) / 2, structure=np.ones((3, 3), bool))
        comp = labels == labels.flat[int(np.argmax(m))]
        out[i] = (m[comp] - med).sum() / m.size if mass else m[comp].mean()
    return out


def _position_z(maps: np.ndarray, fraction: float, divide: bool) -> np.ndarray:
    """Top-k of each map after subtracting the per-position median over the set (and dividing by its MAD)."""
    med = np.median(maps, axis=0, keepdims=True)
    z = maps - med
    if divide:
        z = z / (1.4826 * np.median(np.abs(maps - med), axis=0, keepdims=True) + 1e-6)
    return _topk(z.astype(np.float32), fraction)


def _knn(feats: np.ndarray, k: int) -> np.ndarray:
    """Indices of each image's k nearest other images (cosine similarity of the image vectors)."""
    f = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1)[:, :k]


def rscin(scores: np.ndarray, feats: np.ndarray, ks: tuple[int, ...] = (1, 2, 3)) -> np.ndarray:
    """MuSc's RsCIN: min–max normalised scores averaged over each image's k-NN (itself included), mean over the k's."""
    s = (scores - scores.min()) / max(float(np.ptp(scores)), 1e-12)
    out = np.zeros_like(s)
    for k in ks:
        nn = np.concatenate([np.arange(len(s))[:, None], _knn(feats, k - 1)], 1) if k > 1 else np.arange(len(s))[:, None]
        out += s[nn].mean(1)
    return out / len(ks)


def neighbour_relative(scores: np.ndarray, feats: np.ndarray, k: int) -> np.ndarray:
    """Score minus the median score of the image's k most similar images: a layout that scores high in every image
    that looks like it is not an anomaly."""
    return scores - np.median(scores[_knn(feats, k)], axis=1)


def image_rules(maps: np.ndarray, feats: np.ndarray | None) -> dict[str, np.ndarray]:
    """Every image-score rule measured, by name."""
    med = np.median(maps.reshape(len(maps), -1), axis=1)
    mean, std = maps.reshape(len(maps), -1).mean(1), maps.reshape(len(maps), -1).std(1)
    rules: dict[str, np.ndarray] = {"max": maps.reshape(len(maps), -1).max(1)}
    for f in (0.001, 0.005, 0.01, 0.02, 0.05, 0.1):
        rules[f"top{100 * f:g}%"] = _topk(maps, f)
    for s in (2.0, 4.0):
        rules[f"max, blur σ={s:g}px"] = _blur_max(maps, s)
    rules["top region mean"] = _region_mean(maps)
    rules["top region excess mass"] = _region_mean(maps, mass=True)
    top1 = rules["top1%"]
    rules["top1% − median"] = top1 - med
    for beta in (0.25, 0.5, 0.75):
        rules[f"top1% − {beta:g}·median"] = top1 - beta * med
    rules["top1% / median"] = top1 / np.maximum(med, 1e-6)
    rules["(top1% − mean) / std"] = (top1 - mean) / np.maximum(std, 1e-6)
    rules["top0.1% − median"] = rules["top0.1%"] - med
    rules["top1% of map − position median"] = _position_z(maps, 0.01, False)
    rules["top1% of position z"] = _position_z(maps, 0.01, True)
    if feats is not None:
        rules["RsCIN(top1%)"] = rscin(top1, feats)
        for k in (5, 10):
            rules[f"top1% − median of {k}-NN images"] = neighbour_relative(top1, feats, k)
        rules["(top1% − median) − median of 10-NN"] = neighbour_relative(top1 - med, feats, 10)
        rules["(top1% − 0.5·median) − median of 10-NN"] = neighbour_relative(top1 - 0.5 * med, feats, 10)
    return rules


# -- binarizer rules (maps, image scores → N×H×W bool) ------------------------------------------------------------
def _otsu(values: np.ndarray) -> float:
    from anomaly_clustering.regions import otsu_threshold

    return otsu_threshold(np.asarray(values, np.float64)) if np.ptp(values) > 0 else float(values.max())


def gate_threshold(scores: np.ndarray, gate: str) -> float:
    """Set-level gate on the image scores: Otsu's split, or the outlier rule median + 2·1.4826·MAD."""
    if gate == "otsu":
        return _otsu(scores)
    med = float(np.median(scores))
    return med + 2 * 1.4826 * float(np.median(np.abs(scores - med)))


def inside_masks(maps: np.ndarray, on: np.ndarray, inside: str, base: dict[str, np.ndarray]) -> np.ndarray:
    """Masks of the images ``on`` by one per-image rule: Otsu of the image's own map, the part above halfway between
    its median and its peak, Otsu over the pixels of all flagged images, the pixels above the set's median top-1 %
    value, or a registered binarizer's masks (``base``)."""
    out = np.zeros(maps.shape, bool)
    if not on.any():
        return out
    if inside in base:
        out[on] = base[inside][on]
    elif inside == "image otsu":
        out[on] = np.stack([m > _otsu(m.ravel()) for m in maps[on]])
    elif inside == "half peak":
        med = np.median(maps[on].reshape(on.sum(), -1), 1)[:, None, None]
        out[on] = maps[on] > (maps[on].max((1, 2), keepdims=True) + med) / 2
    elif inside == "set otsu of flagged":
        out[on] = maps[on] > _otsu(maps[on].ravel())
    elif inside == "above median top":
        out[on] = maps[on] > float(np.median(_topk(maps, 0.01)))
    else:
        raise ValueError(inside)
    return out


INSIDE = ("image otsu", "half peak", "set otsu of flagged", "above median top")


def binarizer_rows(maps_rec, images, truth, is_anom, scores: np.ndarray, registered: tuple[str, ...], options: dict) -> dict:
    """Mask scores of the registered binarizers, and of every (gate on ``scores``) × (per-image rule) pair."""
    from anomaly_clustering.registry import create

    res, base = {}, {}
    for name in registered:
        own = {k.split(".", 1)[1]: v for k, v in options.items() if k.startswith(name + ".")}
        base[name] = np.asarray(create("binarizer", name, **own).fit_transform(maps_rec, images).masks, bool)
        res[name] = mask_scores(base[name], truth, is_anom)
    maps = np.asarray(maps_rec.maps, np.float32)
    for gate in ("otsu", "mad"):
        on = scores > gate_threshold(scores, gate)
        for inside in INSIDE + tuple(b for b in ("otsu", "mebin") if b in base):
            res[f"gate {gate} + {inside}"] = mask_scores(inside_masks(maps, on, inside, base), truth, is_anom)
    return res


# -- driver -------------------------------------------------------------------------------------------------------
@functools.cache
def load_subset(set_name: str, subset: int):
    """(images, ground truth, image sizes) of a set's class-stratified subset, built as localization_quality.py does."""
    from anomaly_clustering.data import image_size, load_ground_truth, load_image_set

    images = load_image_set(DATA / set_name / "test")
    gt = load_ground_truth(images)
    if subset and subset < len(images):
        keep = stratified(list(gt.labels), subset)
        images = images.subset(keep.tolist())
        gt = type(gt)(tuple(gt.labels[i] for i in keep), tuple(gt.mask_paths[i] for i in keep), gt.has_masks)
    sizes = np.array([image_size(p) for p in images.paths], np.int64).reshape(len(images), 2)
    return images, gt, sizes


def load_run(set_name: str, localizer: str, seed: int | None, subset: int, maps_dir: Path):
    """(maps record, images, ground truth) of one saved run, with the subset rebuilt and its names checked."""
    from anomaly_clustering.records import AnomalyMaps

    images, gt, sizes = load_subset(set_name, subset)
    z = np.load(maps_dir / f"{set_name}_{localizer}_every1_seed{seed}.npz")
    if list(z["names"]) != list(images.names):
        raise ValueError(f"{set_name}: saved maps are not of this subset")
    return AnomalyMaps(z["maps"].astype(np.float32), z["scores"].astype(np.float32), sizes, {"method": localizer}), images, gt


def image_vectors(images, spec_kwargs: dict) -> np.ndarray:
    from anomaly_clustering.backbones import (
        DEFAULT_BACKBONE,
        FeatureSpec,
        extract_features,
    )

    spec = FeatureSpec(spec_kwargs.get("backbone", DEFAULT_BACKBONE), (), int(spec_kwargs.get("input_size", 128)), None)
    feats = extract_features(images, spec)
    return np.stack([feats.batch([i]).mean((2, 3))[0].numpy() for i in range(len(images))])


def choose(auroc: dict[str, dict[str, float]], sets: list[str], tie: float = 1.0) -> str:
    """The rule with the best worst case over ``sets``; rules within ``tie`` points of it are ties, broken by the mean."""
    worst = {r: min(auroc[r][s] for s in sets) for r in auroc}
    best = max(worst.values())
    return max((r for r in auroc if worst[r] >= best - tie), key=lambda r: np.mean([auroc[r][s] for s in sets]))


def leave_one_out(auroc: dict[str, dict[str, float]]) -> list[tuple[str, str, float, float]]:
    """For each held-out set: the rule :func:`choose` picks on the other sets, its worst case there, its AUROC on
    the held-out set."""
    sets = sorted({s for r in auroc.values() for s in r})
    out = []
    if len(sets) < 2:
        return out
    for held in sets:
        rest = [s for s in sets if s != held]
        best = choose(auroc, rest)
        out.append((held, best, min(auroc[best][s] for s in rest), auroc[best][held]))
    return out


def main() -> None:
    global DATA
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--maps_dir", required=True)
    ap.add_argument("--localizer", default="mutual")
    ap.add_argument("--sets", nargs="*", default=["mtd", "deeppcb", "mvtec_bottle", "neu_det"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--subset", type=int, default=200)
    ap.add_argument("--input_size", type=int, default=128, help="backbone input size of the image vectors (k-NN rules)")
    ap.add_argument("--mask_score", default="top1% − 0.75·median", help="image-score rule that drives the gated binarizers")
    ap.add_argument("--binarizers", nargs="*", default=["hysteresis", "otsu", "mebin"])
    ap.add_argument("--option", action="append", default=[], help="binarizer option name.key=value")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    DATA = Path(args.data) if args.data else DATA
    options = {k: json.loads(v) if v[:1].isdigit() else v for k, v in (kv.split("=", 1) for kv in args.option)}
    torch.set_num_threads(2)
    rows = []
    for set_name in args.sets:
        for seed in args.seeds:
            path = Path(args.maps_dir) / f"{set_name}_{args.localizer}_every1_seed{seed}.npz"
            if not path.exists():
                continue
            rec, images, gt = load_run(set_name, args.localizer, seed, args.subset, Path(args.maps_dir))
            is_anom = np.array([lab not in ("good", "ok", "normal") for lab in gt.labels])
            maps = np.asarray(rec.maps, np.float32)
            rules = image_rules(maps, image_vectors(images, {"input_size": args.input_size}))
            auroc = {r: round(100 * roc_auc_score(is_anom, s), 2) for r, s in rules.items()} if 0 < is_anom.sum() < len(is_anom) else {}
            truth = np.stack([gt.load_mask(i, maps.shape[1:]) for i in range(len(images))]) if gt.has_masks else None
            rec = type(rec)(rec.maps, rules[args.mask_score].astype(np.float32), rec.image_sizes, rec.info)
            masks = binarizer_rows(rec, images, truth, is_anom, rules[args.mask_score], tuple(args.binarizers), options)
            rows.append({"set": set_name, "seed": seed, "auroc_image": auroc, "masks": masks})
            print(json.dumps(rows[-1]), flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(rows, indent=1))
    report(rows)


def report(rows: list[dict]) -> None:
    """Image-AUROC table (mean ± std over seeds, worst case), leave-one-set-out choice, mask table."""
    sets = list(dict.fromkeys(r["set"] for r in rows if r["auroc_image"]))
    rules = list(next(r["auroc_image"] for r in rows if r["auroc_image"]))
    mean = {rule: {s: float(np.mean([r["auroc_image"][rule] for r in rows if r["set"] == s])) for s in sets} for rule in rules}
    print("| image score | " + " | ".join(sets) + " | worst |\n|---|" + "---|" * (len(sets) + 1))
    for rule in sorted(rules, key=lambda x: -min(mean[x].values())):
        cells = [f"{mean[rule][s]:.1f} ± {np.std([r['auroc_image'][rule] for r in rows if r['set'] == s]):.1f}" for s in sets]
        print(f"| {rule} | " + " | ".join(cells) + f" | {min(mean[rule].values()):.1f} |")
    worst = {r: min(mean[r].values()) for r in mean}
    ties = [r for r in mean if worst[r] >= max(worst.values()) - 1.0]
    print(f"\nWithin 1 point of the best worst case (ties; the mutual default breaks them by the binarizer's worst case): {ties}")
    print("\n| held out | rule chosen on the others | its worst case there | held-out AUROC |\n|---|---|---|---|")
    for held, best, worst, value in leave_one_out(mean):
        print(f"| {held} | {best} | {worst:.1f} | {value:.1f} |")
    print("\n| set | binarizer | good EMPTY % | anomalous flagged % | IoU % | F1 % |\n|---|---|---|---|---|---|")
    fmt: Callable = lambda v: "–" if not v or v[0] is None else f"{np.mean(v):.1f}" + (f" ± {np.std(v):.1f}" if len(v) > 1 else "")
    for s in dict.fromkeys(r["set"] for r in rows):
        rs = [r for r in rows if r["set"] == s]
        for b in rs[0]["masks"]:
            vals = {k: [r["masks"][b][k] for r in rs] for k in ("empty_good", "flagged_anomalous", "iou", "f1")}
            print(f"| {s} | {b} | " + " | ".join(fmt(vals[k]) for k in ("empty_good", "flagged_anomalous", "iou", "f1")) + " |")


if __name__ == "__main__":
    main()

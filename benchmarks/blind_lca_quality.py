"""Blind-LCA quality and cost: Table 1 (ours vs Sohn et al.'s baselines), Table 3 (with/without VAE, with/without
contrastive learning), Table 4 (Ward / k-means / GMM / spectral), the map-normalisation study, and seconds per image.

    export ANOMALY_CLUSTERING_CACHE=CACHE
    nice -n 10 python benchmarks/blind_lca_quality.py --data ../shared/data/mtd/test --k 6 --localizers fca-vae,fca
    nice -n 10 python benchmarks/blind_lca_quality.py --data ../shared/data/mtd/test --timing 50,200 --localizers color-stats

Labels come from the first folder of each image path (evaluation only). Every result row prints Sohn's Average floor
(same data, same clusterer) and, on MTD, the paper's figure. Localizers that are not installed are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from anomaly_clustering import registry, runtime
from anomaly_clustering.backbones import FeatureSpec, extract_features
from anomaly_clustering.data import load_image_set
from anomaly_clustering.metrics import clustering_scores

os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")  # benchmarks use local weights only, never a hub download

#: blind-lca.txt, MTD column of Tables 1 and 3 (NMI, ARI, F1).
PAPER_MTD = {
    "ours": (0.221, 0.392, 0.670),
    "average": (0.065, 0.024, 0.289),
    "max-hausdorff": (0.193, 0.112, 0.381),
    "weighted-average": (0.179, 0.120, 0.346),
    "ours w/o VAE": (0.167, 0.214, 0.539),
    "ours w/o CL": (0.142, 0.161, 0.513),
    "ours w/o VAE, CL": (0.176, 0.166, 0.507),
}
PAPER_MTD_TABLE4_NMI = {"kmeans": 0.211, "ward": 0.221, "gmm": 0.157, "spectral": 0.189}


def _peak_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
    except OSError:
        pass


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _ok(kind: str, name: str) -> bool:
    info = registry.discover()[kind].get(name)
    return bool(info and info.ok)


def _labels(images) -> np.ndarray:
    kinds = [n.split("/")[0] for n in images.names]
    names = sorted(set(kinds))
    return np.array([names.index(k) for k in kinds])


def _stratified(images, n: int, seed: int = 0):
    """n images, classes in proportion (at least one each), for the timing runs."""
    if n >= len(images):
        return images
    rng = np.random.default_rng(seed)
    labels = _labels(images)
    pick = rng.permutation(len(images))[:n]
    for c in np.unique(labels):
        if not np.any(labels[pick] == c):
            pick[rng.integers(n)] = rng.choice(np.flatnonzero(labels == c))
    return images.subset(sorted(set(pick.tolist())))


def localize(images, name: str, opts: dict):
    t0 = time.perf_counter()
    maps = registry.create("localizer", name, **opts).fit_predict(images)
    return maps, time.perf_counter() - t0


def binarize(images, maps, name: str):
    if not _ok("binarizer", name):
        name = "otsu"
    return registry.create("binarizer", name).fit_transform(maps, images), name


def represent(images, maps, regions, name: str, opts: dict):
    _peak_reset()
    t0 = time.perf_counter()
    rep = registry.create("representation", name, **opts)
    emb = rep.fit_transform(images, maps, regions)
    return emb, time.perf_counter() - t0, _peak_mb(), rep


def cluster(emb, name: str, k: int, seed: int = 0):
    np.random.seed(seed)
    torch.manual_seed(seed)
    return registry.create("clusterer", name, n_clusters=k).fit_predict(emb).labels


def fmt(s) -> str:
    return f"{s[0]:.3f}/{s[1]:.3f}/{s[2]:.3f}"


def quality(args) -> list[dict]:
    images = load_image_set(args.data)
    if args.subset:
        images = _stratified(images, args.subset)
    labels = _labels(images)
    k = args.k or len(np.unique(labels))
    common = {"input_size": args.input_size}
    if args.backbone:
        common["backbone"] = args.backbone
    rows = []
    localizers = [l for l in args.localizers.split(",") if _ok("localizer", l)]
    skipped = [l for l in args.localizers.split(",") if l not in localizers]
    if skipped:
        print(f"# skipped (not installed): {', '.join(skipped)}")
    t0 = time.perf_counter()
    extract_features(images, FeatureSpec(args.backbone or "tf_efficientnet_lite0", (), args.input_size))
    print(f"# {args.data}: {len(images)} images, K = {k}; features {time.perf_counter() - t0:.1f} s (0 if cached)")
    # Map-independent baselines once.
    reps: dict[str, tuple] = {}
    dummy_maps, _ = localize(images, localizers[0], {}) if localizers else (None, 0)
    dummy_regions, _ = binarize(images, dummy_maps, "otsu")
    for name in ("average", "max-hausdorff", "weighted-average"):
        opts = dict(common, **({"grid": args.grid} if name != "average" else {}))
        emb, sec, peak, _ = represent(images, dummy_maps, dummy_regions, name, opts)
        reps[name] = (emb, sec, peak, "—")
    for loc in localizers:
        maps, lsec = localize(images, loc, {})
        print(f"# localizer {loc}: {lsec:.1f} s")
        regions_q, qname = binarize(images, maps, "quantile-heuristic")
        for norm in args.normalize.split(","):
            tag = f"{loc}|{norm}"
            reps[f"weighted-descriptor[{tag}]"] = (*represent(images, maps, regions_q, "weighted-descriptor", dict(common, normalize_maps=norm))[:3], loc)
            if norm == args.normalize.split(",")[0] or args.cl_all_norms:
                emb, sec, peak, rep = represent(images, maps, regions_q, "contrastive-head", dict(common, normalize_maps=norm, epochs=args.epochs))
                reps[f"contrastive-head[{tag}|{qname}]"] = (emb, sec, peak, loc)
    for clu in args.clusterers.split(","):
        floor = clustering_scores(labels, cluster(reps["average"][0], clu, k))
        for name, (emb, sec, peak, loc) in reps.items():
            s = clustering_scores(labels, cluster(emb, clu, k))
            row = {"data": args.data, "clusterer": clu, "representation": name, "localizer": loc, "nmi": s.nmi, "ari": s.ari, "f1": s.f1_micro, "seconds": sec, "sec_per_image": sec / len(images), "peak_rss_mb": peak, "average_floor": [floor.nmi, floor.ari, floor.f1_micro]}
            rows.append(row)
            print(f"| {Path(args.data).parent.name} | {clu} | {name} | {fmt((s.nmi, s.ari, s.f1_micro))} | floor {fmt((floor.nmi, floor.ari, floor.f1_micro))} | {sec / len(images):.3f} s/img | {peak:.0f} MB |", flush=True)
    return rows


def timing(args) -> list[dict]:
    full = load_image_set(args.data)
    rows = []
    for n in [int(x) for x in args.timing.split(",")]:
        images = _stratified(full, n)
        t0 = time.perf_counter()
        extract_features(images, FeatureSpec(args.backbone or "tf_efficientnet_lite0", (), args.input_size))
        feat_sec = time.perf_counter() - t0
        maps, _ = localize(images, args.localizers.split(",")[0], {})
        regions, _ = binarize(images, maps, "quantile-heuristic")
        for name in ("average", "weighted-descriptor", "weighted-average", "max-hausdorff", "contrastive-head"):
            opts = {"input_size": args.input_size, **({"grid": args.grid} if name in ("weighted-average", "max-hausdorff") else {}), **({"epochs": args.epochs} if name == "contrastive-head" else {})}
            _, sec, peak, rep = represent(images, maps, regions, name, opts)
            rows.append({"n": len(images), "representation": name, "seconds": sec, "sec_per_image": sec / len(images), "peak_rss_mb": peak, "feature_seconds": feat_sec})
            print(f"| {len(images)} | {name} | {sec:.2f} s | {sec / len(images):.4f} s/img | peak {peak:.0f} MB | features {feat_sec:.1f} s |", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--k", type=int, default=0, help="clusters (default: number of classes)")
    p.add_argument("--localizers", default="fca-vae,fca", help="comma-separated; fca-vae = ours, fca = w/o VAE")
    p.add_argument("--normalize", default="minmax-set,none,minmax-image", help="normalize_maps values to compare")
    p.add_argument("--cl_all_norms", action="store_true", help="train the contrastive head for every normalisation")
    p.add_argument("--clusterers", default="ward,kmeans,gmm,spectral")
    p.add_argument("--input_size", type=int, default=512)
    p.add_argument("--backbone", default=None)
    p.add_argument("--grid", type=int, default=16, help="patch grid of the Sohn baselines")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--timing", default="", help="e.g. 50,200,800: seconds per image at these set sizes instead of quality")
    p.add_argument("--subset", type=int, default=0, help="a stratified subset of this many images (the timing runs' subsets)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with runtime.settings(quiet=True):
        rows = timing(args) if args.timing else quality(args)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    if not args.timing and "mtd" in args.data:
        print("# paper (MTD, WRN50, NMI/ARI/F1): " + "; ".join(f"{k} {fmt(v)}" for k, v in PAPER_MTD.items()))
        print("# paper Table 4 NMI: " + ", ".join(f"{k} {v}" for k, v in PAPER_MTD_TABLE4_NMI.items()))


if __name__ == "__main__":
    main()

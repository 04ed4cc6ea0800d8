"""Classifier variants on the views saved by ``classifier_ablation.py --save_blocks``, chosen leave-one-set-out.

    python benchmarks/classifier_ablation.py --seeds 0,1,2 --save_blocks BLOCKS        # every suite set, once
    python benchmarks/block_variants.py --blocks BLOCKS --out variants.json [--clusterers ward,kmeans,gmm,spectral]

Every saved set × seed holds the standardised views (eq. 2 anomaly descriptor ``eq2``, mean-pooled features
``avg512``, deep whole-image statistics ``ctx384``, full-resolution anomaly crop ``crop224``), the crop gates, the
true labels and the floor's NMI (Average + Ward, same images and seed). A variant = a per-view transform (``std``:
as saved; ``pcaD``: the view's first D principal components, ``pcaDw`` whitened; ``l2``: every image's view scaled to
unit norm; ``ssqrt``: signed square root), each view rescaled to unit mean norm and weighted, concatenated,
clustered at the true K. Prints per variant and set: NMI mean ± std, g mean and worst seed; then, for every held-out
set, the variant with the best worst-case g (every seed) over the other sets and what it does on the held-out one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SETS = ("mtd", "neu_det", "mvtec_bottle", "deeppcb")


def unit(b: np.ndarray) -> np.ndarray:
    b = b - b.mean(0)
    return b / max(float(np.linalg.norm(b, axis=1).mean()), 1e-12)


def transform(b: np.ndarray, how: str) -> np.ndarray:
    """One view under a per-view transform, rescaled to unit mean norm (so that every view weighs the same)."""
    b = np.asarray(b, np.float64)
    if how == "std":
        return unit(b)
    if how == "l2":
        c = b - b.mean(0)
        return unit(c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12))
    if how == "ssqrt":
        c = b - b.mean(0)
        return unit(np.sign(c) * np.sqrt(np.abs(c)))
    if how.startswith("pca"):
        whiten = how.endswith("w")
        d = int(how[3:].rstrip("w"))
        c = b - b.mean(0)
        u, s, _ = np.linalg.svd(c, full_matrices=False)
        d = min(d, len(s))
        z = u[:, :d] * (1.0 if whiten else s[:d])
        return unit(z)
    raise ValueError(how)


def cluster(x: np.ndarray, k: int, how: str, seed: int) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering, KMeans, SpectralClustering
    from sklearn.mixture import GaussianMixture

    if how == "ward":
        return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)
    if how == "kmeans":
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    if how == "gmm":
        return GaussianMixture(n_components=k, covariance_type="diag", n_init=3, random_state=seed, reg_covar=1e-4).fit_predict(x)
    if how == "spectral":
        nn = max(10, round(float(np.sqrt(len(x)))))
        return SpectralClustering(n_clusters=k, affinity="nearest_neighbors", n_neighbors=nn, random_state=seed,
                                  assign_labels="cluster_qr").fit_predict(x)
    raise ValueError(how)


def variant_specs(clusterers: list[str], grid: str = "broad") -> dict[str, dict]:
    """name -> {parts: [(view, weight, gate)], tf: transform, cl: clusterer}. ``broad``: every view combination under
    every transform (Ward), a few under the other clusterers; ``fine``: whitened PCA at more widths (Ward); ``core``: the
    preset's and the crop combinations, as saved and under PCA 64 (Ward)."""
    combos = {
        "eq2 + avg512": [("eq2", 1, None), ("avg512", 1, None)],
        "eq2": [("eq2", 1, None)],
        "avg512": [("avg512", 1, None)],
        "ctx384": [("ctx384", 1, None)],
        "crop224": [("crop224", 1, None)],
        "eq2 + ctx384": [("eq2", 1, None), ("ctx384", 1, None)],
        "eq2 + avg512 + ctx384": [("eq2", 1, None), ("avg512", 1, None), ("ctx384", 1, None)],
        "avg512 + ctx384": [("avg512", 1, None), ("ctx384", 1, None)],
        "ctx384 + crop224": [("ctx384", 1, None), ("crop224", 1, None)],
        "ctx384 + crop224[mask]": [("ctx384", 1, None), ("crop224", 1, "mask")],
        "ctx384 + crop224[otsu]": [("ctx384", 1, None), ("crop224", 1, "otsu")],
        "avg512 + ctx384 + crop224": [("avg512", 1, None), ("ctx384", 1, None), ("crop224", 1, None)],
        "avg512 + crop224": [("avg512", 1, None), ("crop224", 1, None)],
        "eq2 + ctx384 + crop224": [("eq2", 1, None), ("ctx384", 1, None), ("crop224", 1, None)],
        "eq2 + ctx384 + crop224[mask]": [("eq2", 1, None), ("ctx384", 1, None), ("crop224", 1, "mask")],
        "eq2 + avg512 + ctx384 + crop224": [("eq2", 1, None), ("avg512", 1, None), ("ctx384", 1, None), ("crop224", 1, None)],
        "eq2 + avg512 + ctx384 + crop224[mask]": [("eq2", 1, None), ("avg512", 1, None), ("ctx384", 1, None), ("crop224", 1, "mask")],
        "eq2 + avg512 + crop224": [("eq2", 1, None), ("avg512", 1, None), ("crop224", 1, None)],
        "eq2 x0.5 + avg512 + ctx384": [("eq2", 0.5, None), ("avg512", 1, None), ("ctx384", 1, None)],
        "eq2 + avg512 + ctx384 x0.5": [("eq2", 1, None), ("avg512", 1, None), ("ctx384", 0.5, None)],
        "eq2 + avg512 x0.5 + ctx384": [("eq2", 1, None), ("avg512", 0.5, None), ("ctx384", 1, None)],
        "eq2 x0.5 + ctx384": [("eq2", 0.5, None), ("ctx384", 1, None)],
        "eq2 + ctx384 x0.5": [("eq2", 1, None), ("ctx384", 0.5, None)],
        "eq2 x0.5 + avg512 + ctx384 + crop224": [("eq2", 0.5, None), ("avg512", 1, None), ("ctx384", 1, None), ("crop224", 1, None)],
        "avg512 + ctx384 + crop224 x0.5": [("avg512", 1, None), ("ctx384", 1, None), ("crop224", 0.5, None)],
        "ctx384 + crop224 x0.5": [("ctx384", 1, None), ("crop224", 0.5, None)],
        "ctx384 x0.5 + crop224": [("ctx384", 0.5, None), ("crop224", 1, None)],
        "eq2 x0.5 + avg512 + ctx384 + crop224[mask]": [("eq2", 0.5, None), ("avg512", 1, None), ("ctx384", 1, None), ("crop224", 1, "mask")],
    }
    specs = {}
    if grid == "core":
        core = ("eq2 x0.5 + avg512 + ctx384", "eq2 + avg512", "eq2 + avg512 + ctx384", "ctx384", "crop224", "ctx384 + crop224",
                "ctx384 + crop224[mask]", "eq2 + ctx384 + crop224", "eq2 + ctx384 + crop224[mask]", "avg512 + ctx384 + crop224",
                "eq2 + avg512 + ctx384 + crop224", "eq2 + avg512 + ctx384 + crop224[mask]", "eq2 x0.5 + avg512 + ctx384 + crop224",
                "eq2 x0.5 + avg512 + ctx384 + crop224[mask]")
        return {f"{name} | {tf} | ward": {"parts": combos[name], "tf": tf, "cl": "ward"} for tf in ("std", "pca64") for name in core}
    if grid == "fine":
        fine = ("ctx384", "ctx384 + crop224", "ctx384 + crop224 x0.5", "ctx384 + crop224[mask]", "avg512 + ctx384",
                "eq2 + avg512 + ctx384", "eq2 x0.5 + avg512 + ctx384", "eq2 + ctx384", "eq2 x0.5 + ctx384", "avg512 + ctx384 + crop224",
                "eq2 + avg512 + ctx384 + crop224", "eq2 + avg512")
        for tf in ("pca8w", "pca12w", "pca16w", "pca24w", "pca32w", "pca40w", "pca48w", "pca64w"):
            for name in fine:
                specs[f"{name} | {tf} | ward"] = {"parts": combos[name], "tf": tf, "cl": "ward"}
        return specs
    for tf in ("std", "l2", "ssqrt", "pca16", "pca32", "pca64", "pca16w", "pca32w"):
        for name, parts in combos.items():
            specs[f"{name} | {tf} | ward"] = {"parts": parts, "tf": tf, "cl": "ward"}
    for cl in clusterers:
        if cl == "ward":
            continue
        for tf in ("std", "pca32", "l2"):
            for name in ("ctx384", "eq2 + avg512 + ctx384", "ctx384 + crop224", "avg512 + ctx384 + crop224", "eq2 + ctx384 + crop224",
                         "eq2 + avg512 + ctx384 + crop224", "eq2 + avg512"):
                specs[f"{name} | {tf} | {cl}"] = {"parts": combos[name], "tf": tf, "cl": cl}
    return specs


def evaluate(blocks_dir: Path, clusterers: list[str], localizer: str, done: dict | None = None,
             out_file: str | None = None, grid: str = "broad") -> dict:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    specs = variant_specs(clusterers, grid)
    out: dict[str, dict] = {n: {} for n in specs}
    have = {(s, e["seed"]) for v in (done or {}).values() for s, r in v.items() for e in r}
    for n, v in (done or {}).items():
        if n in out:
            out[n] = {s: list(r) for s, r in v.items()}
    for path in sorted(blocks_dir.glob(f"*_{localizer}_seed*.npz")):
        set_name, seed = path.stem.rsplit(f"_{localizer}_seed", 1)
        seed = int(seed)
        if (set_name, seed) in have:
            continue
        z = np.load(path)
        true, k, floor = z["true"], int(z["k"]), float(z["floor"])
        cache: dict[tuple[str, str], np.ndarray] = {}
        for name, sp in specs.items():
            if any(f"block_{v}" not in z for v, _, _ in sp["parts"]):
                continue
            cols = []
            for v, w, gate in sp["parts"]:
                if (v, sp["tf"]) not in cache:
                    cache[(v, sp["tf"])] = transform(z[f"block_{v}"], sp["tf"])
                b = cache[(v, sp["tf"])] * float(w)
                cols.append(b * z[f"gate_{gate}"][:, None] if gate else b)
            x = np.concatenate(cols, 1)
            score = float(nmi(true, cluster(x, k, sp["cl"], seed)))
            out[name].setdefault(set_name, []).append({"seed": seed, "nmi": score, "floor": floor, "g": (score - floor) / (1 - floor)})
        print(f"{path.stem}: done", flush=True)
        if out_file is not None:
            Path(out_file).write_text(json.dumps({"raw": out, "summary": {}}, indent=0))
    return out


def summarise(res: dict) -> dict:
    summ = {}
    for name, per_set in res.items():
        if not all(s in per_set for s in SETS):
            continue
        row = {}
        for s in SETS:
            r = per_set[s]
            n = [e["nmi"] for e in r]
            g = [e["g"] for e in r]
            row[s] = {"nmi": float(np.mean(n)), "nmi_sd": float(np.std(n)), "g": float(np.mean(g)), "g_min": float(min(g)),
                      "floor": float(np.mean([e["floor"] for e in r])), "seeds": len(r)}
        summ[name] = row
    return summ


def key(row: dict, sets) -> tuple[float, float]:
    """Best worst-case g over ``sets`` (every seed), then the best mean of the per-set mean g."""
    return (min(row[s]["g_min"] for s in sets), float(np.mean([row[s]["g"] for s in sets])))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", required=True)
    ap.add_argument("--localizer", default="mutual")
    ap.add_argument("--clusterers", default="ward,kmeans,gmm,spectral")
    ap.add_argument("--out", default=None)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--resume", action="store_true", help="keep the set × seed results already in --out, evaluate the rest")
    ap.add_argument("--grid", choices=("broad", "fine", "core"), default="broad")
    ap.add_argument("--merge", nargs="*", default=None, help="only summarise these --out files of earlier runs (e.g. one per set)")
    args = ap.parse_args()
    if args.merge:
        res: dict[str, dict] = {}
        for f in args.merge:
            for n, v in json.loads(Path(f).read_text())["raw"].items():
                for s, r in v.items():
                    have = res.setdefault(n, {}).setdefault(s, [])
                    have.extend(e for e in r if e["seed"] not in {h["seed"] for h in have})
        report(res, args.out, args.top)
        return
    done = json.loads(Path(args.out).read_text())["raw"] if args.resume and args.out and Path(args.out).exists() else None
    res = evaluate(Path(args.blocks), args.clusterers.split(","), args.localizer, done, args.out, args.grid)
    report(res, args.out, args.top)


def report(res: dict, out: str | None, top: int) -> None:
    summ = summarise(res)
    if out:
        Path(out).write_text(json.dumps({"raw": res, "summary": summ}, indent=1))
    if not summ:
        return
    ranked = sorted(summ, key=lambda n: key(summ[n], SETS), reverse=True)
    print("\nvariant | " + " | ".join(f"{s} NMI, g (worst)" for s in SETS) + " | worst g | mean g")
    for n in ranked[:top]:
        r = summ[n]
        cells = " | ".join(f"{r[s]['nmi']:.3f}±{r[s]['nmi_sd']:.3f} {r[s]['g']:+.3f} ({r[s]['g_min']:+.3f})" for s in SETS)
        print(f"{n} | {cells} | {key(r, SETS)[0]:+.3f} | {key(r, SETS)[1]:+.3f}")
    print("\nleave-one-set-out: chosen on the other three sets (worst g over their seeds, then mean g)")
    for held in SETS:
        rest = [s for s in SETS if s != held]
        best = max(summ, key=lambda n: key(summ[n], rest))
        r = summ[best]
        print(f"held out {held}: {best}  (others worst {key(r, rest)[0]:+.3f}, mean {key(r, rest)[1]:+.3f}) -> "
              f"{held} NMI {r[held]['nmi']:.3f} g {r[held]['g']:+.3f} (worst seed {r[held]['g_min']:+.3f})")


if __name__ == "__main__":
    main()

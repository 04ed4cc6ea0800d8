"""Estimating the number of defect types (``--n_clusters auto``) on the development suite (issue #21 §3).

    ANOMALY_CLUSTERING_CACHE=<cache dir> python benchmarks/k_estimate.py --embeddings <dir> [--data DATA]

Step 1 (``embed``): for each suite set (``benchmarks/suite.yaml``: the same images as ``anomaly-cluster benchmark
--suite``) and each embedding kind, fit the pipeline through the Python API with K = the true number of types and keep
the per-image vectors the clusterer sees, with the true labels (evaluation only), in ``<dir>/<set>__<kind>.npz``.
Kinds: ``average`` (Sohn et al.'s floor: mean-pooled backbone features; it ignores the maps, so the cheap
``color-stats`` localizer stands in), ``context`` (the default classifier
``anomaly-context`` with the deterministic ``fca`` localizer), ``context-mutual`` (``anomaly-context`` × ``mutual``).
Existing files are reused.

Step 2 (``estimate``): every K estimator of :mod:`anomaly_clustering.kselect` on every file, all with the clusterer's
Ward; the estimated K, NMI at it and NMI at the true K; random estimators over ``--seeds``. Prints a Markdown table and
a leave-one-set-out check of the ``auto`` rule's parameter, and writes ``--out`` (JSON). ``--blocks`` adds saved view
blocks (``<set>_<maps>_seed<seed>.npz``: ``block_<view>`` arrays and ``true`` labels) as more embeddings: each
``--block_views`` entry is the concatenation of those blocks, each centred and scaled to unit mean norm. Rules that
were measured and dropped (``duda-hart``, ``pca-eigengap``, ``bootstrap-eigengap``, and the ``constant`` prior) stay
selectable here by ``--methods``, not in kselect.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")  # local weights only, never a hub download

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_paths import REPO, data_root  # noqa: E402

KINDS = {
    "average": {"localizer": "color-stats", "classifier": "average"},  # Average ignores the maps: the cheapest localizer
    "context": {"localizer": "fca", "classifier": "anomaly-context"},
    "context-mutual": {"localizer": "mutual", "classifier": "anomaly-context"},
}


def cap_subsets(sets: list, caps: list[str]) -> list:
    """The suite's sets, those named in ``caps`` (``SET=N``) cut to a class-stratified subset of N images
    (``subset_seed`` as in the suite) and renamed ``SET-N``."""
    size = {name: int(n) for name, _, n in (c.partition("=") for c in caps)}
    return [dataclasses.replace(s, name=f"{s.name}-{size[s.name]}", subset=size[s.name]) if s.name in size else s for s in sets]


def embed(sets: list, kinds: list[str], folder: Path, seed: int = 0) -> None:
    """Write ``<set>__<kind>.npz`` (vectors, labels, digests) for every set and kind not already there."""
    from anomaly_clustering import AnomalyClustering
    from anomaly_clustering.benchmarking import select_images
    from anomaly_clustering.data import load_ground_truth

    folder.mkdir(parents=True, exist_ok=True)
    for s in sets:
        images = None
        for kind in kinds:
            file = folder / f"{s.name}__{kind}.npz"
            if file.exists():
                continue
            if images is None:
                images = select_images(s.data, s.subset, s.subset_seed, s.exclude_good)
                labels = np.array(load_ground_truth(images).labels)
            t0 = time.perf_counter()
            result = AnomalyClustering(**KINDS[kind], n_clusters=s.n_clusters, seed=seed).fit(images)
            x = result.embeddings.image_vectors().astype(np.float32)
            np.savez_compressed(file, vectors=x, labels=labels, digests=np.array(images.digests), names=np.array(images.names))
            print(f"[embed] {s.name} × {kind}: {len(images)} images, {x.shape[1]} dims, {time.perf_counter() - t0:.0f} s", flush=True)


# ------------------------------------------------------------- rules measured here and dropped (not in kselect)
def _pca(x: np.ndarray, d: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(min(int(d), x.shape[1], len(x) - 1), random_state=0).fit_transform(x)


def duda_hart(x: np.ndarray, ks: list[int], seed: int, d: int = 5, z: float = 3.2) -> tuple[int, dict[int, float]]:
    """1 + the number of Ward's top k_max − 1 splits that Duda & Hart's Je(2)/Je(1) test (critical value z = 3.2, as
    Milligan & Cooper 1985) calls significant, in the first ``d`` principal components; curve: each split's ratio."""
    from scipy.cluster.hierarchy import linkage

    xp = _pca(x, d)
    p, n = xp.shape[1], len(xp)
    tree = linkage(xp, "ward")
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    for i, (a, b) in enumerate(tree[:, :2].astype(int)):
        members[n + i] = members[a] + members[b]
    count, curve = 1, {}
    for j, row in enumerate(tree[::-1][: ks[-1] - 1]):
        a, b = members[int(row[0])], members[int(row[1])]
        both = xp[a + b]
        ratio = (((xp[a] - xp[a].mean(0)) ** 2).sum() + ((xp[b] - xp[b].mean(0)) ** 2).sum()) / ((both - both.mean(0)) ** 2).sum()
        critical = 1 - 2 / (np.pi * p) - z * np.sqrt(2 * (1 - 8 / (np.pi**2 * p)) / (len(both) * p))
        count += bool(ratio < critical)
        curve[j + 2] = float(ratio)
    return min(max(count, ks[0]), ks[-1]), curve


def pca_eigengap(x: np.ndarray, ks: list[int], seed: int, d: int = 10, n_neighbors: int = 15) -> tuple[int, dict[int, float]]:
    """The k-NN eigengap on the first ``d`` principal components."""
    from anomaly_clustering.kselect import eigengap_curve

    curve = eigengap_curve(_pca(x, d), ks[0], ks[-1], n_neighbors)
    return min(curve, key=lambda k: (-curve[k], k)), curve


def bootstrap_eigengap(x: np.ndarray, ks: list[int], seed: int, n_neighbors: int = 10, draws: int = 20,
                       fraction: float = 0.8) -> tuple[int, dict[int, float]]:
    """The most frequent k-NN eigengap estimate over ``draws`` seeded subsamples of ``fraction`` of the images."""
    from anomaly_clustering.kselect import eigengap_curve

    rng = np.random.default_rng(seed)
    votes = {k: 0.0 for k in ks}
    for _ in range(draws):
        curve = eigengap_curve(x[rng.choice(len(x), int(fraction * len(x)), replace=False)], ks[0], ks[-1], n_neighbors)
        votes[min(curve, key=lambda k: (-curve[k], k))] += 1.0 / draws
    return min(votes, key=lambda k: (-votes[k], k)), votes


def constant(x: np.ndarray, ks: list[int], seed: int, k: int = 6) -> tuple[int, dict[int, float]]:
    """No estimate at all, K = ``k`` always: the prior a rule has to beat (the suite's true K are 4, 6, 6 and 7)."""
    return int(k), {int(k): 1.0}


DROPPED = {"duda-hart": duda_hart, "pca-eigengap": pca_eigengap, "bootstrap-eigengap": bootstrap_eigengap, "constant": constant}
RANDOM = {"gap", "prediction-strength", "stability", "bootstrap-eigengap"}  # seeded estimators: run once per seed


def run_method(x: np.ndarray, k_min: int, k_max: int, name: str, seed: int, **options) -> tuple[int, dict[int, float]]:
    """An estimator of kselect, or one of the rules measured here and dropped."""
    from anomaly_clustering.kselect import estimate_k

    if name in DROPPED:
        return DROPPED[name](x, list(range(k_min, min(k_max, len(x) - 1) + 1)), seed, **options)
    return estimate_k(x, k_min, k_max, name, seed, **options)


def load(file: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors of the distinct images, their true labels, inverse: image → its distinct row), as the pipeline
    clusters one copy of each pixel-identical picture."""
    z = np.load(file)
    _, keep, inverse = np.unique(z["digests"], return_index=True, return_inverse=True)
    return z["vectors"].astype(np.float64), z["labels"], keep, inverse


def parse_method(text: str) -> tuple[str, dict[str, float]]:
    """``name`` or ``name:option=value``: an estimator of kselect and one of its parameters."""
    name, _, opt = text.partition(":")
    if not opt:
        return name, {}
    key, _, value = opt.partition("=")
    return name, {key: float(value) if "." in value else int(value)}


def expand(families: list[str]) -> list[str]:
    """``name:option=v1,v2`` → ``name:option=v1``, ``name:option=v2``."""
    out = []
    for f in families:
        head, _, values = f.rpartition("=")
        out += [f"{head}={v}" for v in values.split(",")] if head else [f]
    return out


def standardised_blocks(file: Path, views: list[str]) -> np.ndarray:
    """The named view blocks of a saved block file, each centred and scaled to unit mean row norm (as the
    ``multiview`` representation does with unit view weights), side by side."""
    z = np.load(file)
    parts = []
    for v in views:
        b = z[f"block_{v}"].astype(np.float64)
        b = b - b.mean(0)
        parts.append(b / max(float(np.linalg.norm(b, axis=1).mean()), 1e-12))
    return np.concatenate(parts, axis=1)


def sources(folder: Path, sets: list, kinds: list[str], blocks: Path | None = None, block_views: list[str] = (),
            block_maps: str = "mutual", block_seeds: list[int] = ()) -> list[tuple]:
    """(set, kind, vectors of the distinct images, labels, inverse) for every embedding file there is: the
    ``<set>__<kind>.npz`` of step 1, then per ``block_views`` entry (``eq2+avg512+ctx384``) and seed the
    standardised concatenation of ``<blocks>/<set>_<maps>_seed<seed>.npz`` (kind ``VIEWS s<seed>``)."""
    out = []
    for s in sets:
        for kind in kinds:
            file = folder / f"{s.name}__{kind}.npz"
            if not file.exists():
                print(f"[estimate] {file.name}: missing, skipped", flush=True)
                continue
            x_all, y, keep, inverse = load(file)
            out.append((s, kind, x_all[keep], y, inverse))
        for views in block_views if blocks else []:
            for seed in block_seeds:
                file = blocks / f"{s.name}_{block_maps}_seed{seed}.npz"
                if not file.exists():
                    print(f"[estimate] {file.name}: missing, skipped", flush=True)
                    continue
                y = np.load(file)["true"]
                out.append((s, f"{views} s{seed}", standardised_blocks(file, views.split("+")), y, np.arange(len(y))))
    return out


def study(folder: Path, sets: list, kinds: list[str], methods: list[str], seeds: list[int], k_min: int, k_max: int,
          **block_options) -> list[dict]:
    """One row per set × kind × method: K per seed, NMI at each, NMI at the true K."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from anomaly_clustering.kselect import ward_cuts

    rows = []
    for s, kind, x, y, inverse in sources(folder, sets, kinds, **block_options):
        cuts = ward_cuts(x, list(range(1, k_max + 2)))
        score = {k: float(nmi(y, cuts[k][inverse])) for k in cuts}
        for method in methods:
            t0 = time.perf_counter()
            name, options = parse_method(method)
            runs = [run_method(x, k_min, k_max, name, seed, **options) for seed in (seeds if name in RANDOM else seeds[:1])]
            ks = [k for k, _ in runs]
            rows.append({"set": s.name, "kind": kind, "method": method, "true_k": s.n_clusters, "n": len(y),
                         "k": ks, "nmi": [score[k] for k in ks], "nmi_true_k": score[s.n_clusters],
                         "curve": {str(k): round(v, 4) for k, v in runs[0][1].items()}, "nmi_by_k": score,
                         "seconds": round((time.perf_counter() - t0) / len(runs), 2)})
            print(f"[estimate] {s.name} × {kind} × {method}: K {ks} (truth {s.n_clusters}), NMI {np.mean(rows[-1]['nmi']):.3f} vs {score[s.n_clusters]:.3f}", flush=True)
    return rows


def _cell(row: dict) -> str:
    ks = row["k"]
    k = str(ks[0]) if len(set(ks)) == 1 else "/".join(map(str, ks))
    d = np.mean(row["nmi"]) - row["nmi_true_k"]
    return f"{k} ({d:+.3f})"


def verdict(rows: list[dict], method: str, kinds: list[str]) -> dict:
    """§3 for one method: per kind, sets with every seed's K within ±1 of the truth, and the worst NMI shortfall."""
    out = {}
    for kind in kinds:
        mine = [r for r in rows if r["method"] == method and r["kind"] == kind]
        if not mine:
            continue
        within = sum(all(abs(k - r["true_k"]) <= 1 for k in r["k"]) for r in mine)
        short = min(min(r["nmi"]) - r["nmi_true_k"] for r in mine)
        out[kind] = {"within_1": within, "sets": len(mine), "worst_nmi_delta": round(short, 4),
                     "met": within >= min(3, len(mine)) and short >= -0.05}
    return out


def rank_key(rows: list[dict], method: str) -> tuple[int, float]:
    """How a method does over the given rows (every set × kind): cells with every seed's K within ±1 and NMI within
    0.05 of NMI at the true K, then the worst NMI shortfall (larger is better for both)."""
    mine = [r for r in rows if r["method"] == method]
    ok = sum(all(abs(k - r["true_k"]) <= 1 for k in r["k"]) and min(r["nmi"]) - r["nmi_true_k"] >= -0.05 for r in mine)
    return ok, min(min(r["nmi"]) - r["nmi_true_k"] for r in mine)


def leave_one_set_out(rows: list[dict], variants: list[str]) -> list[str]:
    """For each set: the variant (a parameter value) with the best rank on the other sets, and how it does on this one."""
    out = []
    for held in dict.fromkeys(r["set"] for r in rows):
        train = [r for r in rows if r["set"] != held]
        if not train:
            continue
        best = max(variants, key=lambda v: rank_key(train, v))
        test = [r for r in rows if r["set"] == held and r["method"] == best]
        cells = ", ".join(f"{r['kind']} K {'/'.join(map(str, r['k']))} (truth {r['true_k']}, ΔNMI {np.mean(r['nmi']) - r['nmi_true_k']:+.3f})" for r in test)
        out.append(f"- held out {held}: chosen on the other sets {best} ({rank_key(train, best)[0]}, {rank_key(train, best)[1]:+.3f}); on {held}: {cells}")
    return out


def table(rows: list[dict], methods: list[str], kinds: list[str]) -> str:
    """Markdown: per method, K (NMI at K − NMI at true K) per set × kind, then the §3 verdict."""
    sets = list(dict.fromkeys(r["set"] for r in rows))
    cols = [(s, k) for k in kinds for s in sets if any(r["set"] == s and r["kind"] == k for r in rows)]
    head = "| method | " + " | ".join(f"{k} {s} (K={next(r['true_k'] for r in rows if r['set'] == s)})" for s, k in cols) + " | ±1 / worst ΔNMI |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for m in methods:
        cells = []
        for s, k in cols:
            row = next((r for r in rows if r["set"] == s and r["kind"] == k and r["method"] == m), None)
            cells.append(_cell(row) if row else "–")
        v = verdict(rows, m, kinds)
        summary = "; ".join(f"{k} {x['within_1']}/{x['sets']}, {x['worst_nmi_delta']:+.3f}" for k, x in v.items())
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {summary} |")
    nmi_true = " | ".join(f"{next(r['nmi_true_k'] for r in rows if r['set'] == s and r['kind'] == k):.3f}" for s, k in cols)
    lines.append(f"| *NMI at true K* | {nmi_true} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="data root (default $ANOMALY_CLUSTERING_DATA, else ../shared/data)")
    p.add_argument("--suite", default=str(REPO / "benchmarks" / "suite.yaml"))
    p.add_argument("--sets", nargs="*", default=None, help="suite sets (default all)")
    p.add_argument("--kinds", nargs="*", default=["average", "context"], choices=sorted(KINDS))
    p.add_argument("--embeddings", required=True, help="folder of the .npz embedding files (written when missing)")
    p.add_argument("--subset", nargs="*", default=[], metavar="SET=N",
                   help="a class-stratified subset of N images of SET instead of the suite's protocol (e.g. mtd=650)")
    p.add_argument("--embed_only", action="store_true", help="step 1 only")
    p.add_argument("--no_embed", action="store_true", help="step 2 only, on the files already there")
    p.add_argument("--methods", nargs="*", default=None, help="K estimators (default: every one of kselect.K_METHODS)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2], help="seeds of the random estimators")
    p.add_argument("--k_min", type=int, default=2)
    p.add_argument("--k_max", type=int, default=10)
    p.add_argument("--out", default=None, help="JSON file of the rows")
    p.add_argument("--blocks", default=None, help="folder of saved view blocks <set>_<maps>_seed<seed>.npz (read only)")
    p.add_argument("--block_views", nargs="*", default=["eq2+avg512+ctx384"],
                   help="concatenations of standardised blocks to estimate on, e.g. eq2+avg512+ctx384 ctx384")
    p.add_argument("--block_maps", default="mutual", help="the localizer in the block files' names")
    p.add_argument("--block_seeds", nargs="*", type=int, default=[0, 1, 2], help="the block files' seeds")
    p.add_argument("--loso", nargs="*", default=[], metavar="NAME:OPTION=V1,V2",
                   help="parameter grids for the leave-one-set-out check, e.g. prediction-strength:threshold=0.6,0.7,0.8")
    args = p.parse_args(argv)
    from anomaly_clustering.benchmarking import load_suite

    sets = cap_subsets(load_suite(args.suite, str(args.data or data_root()), args.sets), args.subset)
    if not args.no_embed:
        embed(sets, args.kinds, Path(args.embeddings))
    if args.embed_only:
        return 0
    from anomaly_clustering.kselect import K_METHODS

    methods = args.methods or list(K_METHODS)
    grids = {f: expand([f]) for f in args.loso}
    every = list(dict.fromkeys(methods + [v for g in grids.values() for v in g]))
    rows = study(Path(args.embeddings), sets, args.kinds, every, args.seeds, args.k_min, args.k_max,
                 blocks=Path(args.blocks) if args.blocks else None, block_views=args.block_views,
                 block_maps=args.block_maps, block_seeds=args.block_seeds)
    print(table(rows, every, list(dict.fromkeys(r["kind"] for r in rows))))
    ranked = sorted(methods, key=lambda m: rank_key(rows, m), reverse=True)
    print("\nRanking (set × kind cells meeting §3, worst ΔNMI): " + "; ".join(f"{m} ({rank_key(rows, m)[0]}, {rank_key(rows, m)[1]:+.3f})" for m in ranked))
    for family, variants in grids.items():
        print(f"\nLeave one set out, {family}:")
        print("\n".join(leave_one_set_out(rows, variants)))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

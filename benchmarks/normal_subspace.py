"""Once the normal group is set aside, does removing the directions in which *normal* images vary help Ward find the
defect types among the rest? (nuisance attribute projection: what varies among defect-free images — layout, lighting,
the product's own variants — is not a defect type.)

    ANOMALY_CLUSTERING_CACHE=CACHE python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks BLOCKS
    python benchmarks/normal_subspace.py --blocks BLOCKS [--sets mtd deeppcb] [--out subspace.json]

Per saved set × seed: `multiview-all-normal-first` (the default) on the saved views, and the same with the rest's
vectors transformed before Ward by a rule learned on the normal group alone (the images the binarizer left without
a region): ``nap R`` removes its first R principal directions; ``nap f=F`` removes as many as hold the share F of its
variance; ``whiten a=A`` divides every direction by sqrt(normal variance + A · mean normal variance) (a shrunk
Mahalanobis metric of normal variation). Where the rule does not set a normal group aside, every variant equals the
default (the row says how often it was set aside).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from normal_first_rule import descriptor  # noqa: E402  (benchmarks/ is the script folder)
from view_harness import region_info, run_saved_views, saved_blocks, saved_views_parser, ward  # noqa: E402

NAP_COMPONENTS = (1, 2, 4, 8, 16, 32)
NAP_SHARES = (0.25, 0.5, 0.75)
WHITEN_SHRINK = (0.1, 1.0)
DISCRIMINANT_DIMS = (8, 32)


def normal_basis(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, principal directions as rows, variances) of the normal group's vectors."""
    mu = normal.mean(0)
    _, s, vt = np.linalg.svd(normal - mu, full_matrices=False)
    return mu, vt, s**2 / max(len(normal) - 1, 1)


def remove(x: np.ndarray, vt: np.ndarray, r: int) -> np.ndarray:
    """``x`` without its components along the first ``r`` rows of ``vt``."""
    v = vt[:r]
    return x - (x @ v.T) @ v


def whiten(x: np.ndarray, mu: np.ndarray, vt: np.ndarray, var: np.ndarray, shrink: float) -> np.ndarray:
    """``x`` in the normal group's shrunk Mahalanobis metric (directions outside its span scaled by the shrinkage)."""
    a = shrink * float(var.mean())
    c = x - mu
    inside = c @ vt.T
    outside = c - inside @ vt
    return np.concatenate([inside / np.sqrt(var + a), outside / np.sqrt(a)], 1)


def discriminant(rest: np.ndarray, normal: np.ndarray, m: int, shrink: float = 0.1) -> np.ndarray:
    """``rest`` on the ``m`` directions along which it varies most relative to the normal group (generalised
    eigenvectors of its covariance against the normal group's, shrunk towards its mean variance)."""
    from scipy.linalg import eigh

    cr = np.cov(rest, rowvar=False)
    cn = np.cov(normal, rowvar=False)
    cn += shrink * float(np.trace(cn)) / len(cn) * np.eye(len(cn))
    w, v = eigh(cr, cn)
    return (rest - rest.mean(0)) @ v[:, np.argsort(w)[::-1][:m]]


def row_of(images, path, saved) -> dict[str, float]:
    """NMI of the default and of each transform of the rest, on one saved set × seed."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from anomaly_clustering.plugins.multiview.clusterers import NormalFirstClusterer
    from anomaly_clustering.records import Embeddings

    has_region, info = region_info(saved)
    x = descriptor(saved_blocks(saved), has_region).astype(np.float64)
    true, k = saved["true"], int(saved["k"])
    res = NormalFirstClusterer(n_clusters=k, normal_by="region").fit_predict(Embeddings.per_image(x.astype(np.float32), info))
    row = {"default": float(nmi(true, res.labels))}
    print(f"{Path(path).stem}: normal group set aside: {res.info['normal_set_aside']}", flush=True)
    normal = ~has_region
    mu, vt, var = normal_basis(x[normal])
    share = np.cumsum(var) / var.sum()
    variants: dict[str, np.ndarray] = {}
    for r in NAP_COMPONENTS:
        variants[f"nap {r}"] = remove(x[has_region], vt, r)
    for f in NAP_SHARES:
        variants[f"nap f={f}"] = remove(x[has_region], vt, int(np.searchsorted(share, f)) + 1)
    for a in WHITEN_SHRINK:
        variants[f"whiten a={a}"] = whiten(x[has_region], mu, vt, var, a)
    blocks = saved_blocks(saved)
    edges = np.cumsum([0] + [blocks[n].shape[1] for n in ("eq2", "avg512", "ctx384", "crop224")])
    for f in NAP_SHARES:
        parts = []
        for a, b in zip(edges[:-1], edges[1:]):
            _, vt_v, var_v = normal_basis(x[normal][:, a:b])
            if var_v.sum() <= 0:  # the crop view: zero for every normal image
                parts.append(x[has_region][:, a:b])
                continue
            r = int(np.searchsorted(np.cumsum(var_v) / var_v.sum(), f)) + 1
            parts.append(remove(x[has_region][:, a:b], vt_v, r))
        variants[f"nap/view f={f}"] = np.concatenate(parts, 1)
    for m in DISCRIMINANT_DIMS:
        variants[f"ratio {m}"] = discriminant(x[has_region], x[normal], m)
    for name, rest in variants.items():
        if not res.info["normal_set_aside"]:
            row[name] = row["default"]
            continue
        labels = np.full(len(x), k - 1, np.int64)
        labels[has_region] = ward(rest, k - 1)
        row[name] = float(nmi(true, labels))
    return row


def main() -> None:
    run_saved_views(saved_views_parser().parse_args(), row_of, width=14)


if __name__ == "__main__":
    main()

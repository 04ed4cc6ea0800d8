"""Once the normal group is set aside, does removing the directions in which *normal* images vary help Ward find the
defect types among the rest? (nuisance attribute projection: what varies among defect-free images — layout, lighting,
the product's own variants — is not a defect type.)

    ANOMALY_CLUSTERING_CACHE=CACHE python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks BLOCKS
    python benchmarks/normal_subspace.py --blocks BLOCKS [--sets mtd deeppcb] [--out subspace.json]

Per saved set × seed: `multiview-all-normal-first` (the default) on the saved views, and the same with the rest's
vectors transformed before Ward by a rule learned on the normal group alone (the images the binarizer left without
a region): ``nap R`` removes its first R principal directions; ``nap f=F`` removes as many as hold the share F of its
variance; ``whiten a=A`` divides every direction by sqrt(normal variance + A · mean normal variance) (a shrunk
Mahalanobis metric of normal variation); ``nap/view f=F`` does ``nap f=F`` in each view separately; ``ratio M`` keeps
the rest's M directions of most variance relative to the normal group's. Where the rule does not set a normal group
aside, those variants equal the default (each file's line says whether it was set aside). Two more rows use the
normal directions (F = 0.5) beyond that case: ``check after removal`` (the structure check decides on the projected
descriptor) and ``removal, rule off too`` (where the rule stays off, Ward on all images after the projection).
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


def project_out(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``x`` without its components along the rows of ``v`` (orthonormal)."""
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


def per_view_removal(x: np.ndarray, has_region: np.ndarray, widths: list[int], share: float) -> np.ndarray:
    """The rest's vectors with each view's own normal directions (holding ``share`` of that view's normal variance)
    removed; a view without normal variation (the gated crop) has none to remove."""
    from anomaly_clustering.plugins.multiview.clusterers import normal_directions

    edges = np.cumsum([0, *widths])
    return np.concatenate([project_out(x[has_region][:, a:b], normal_directions(x[~has_region][:, a:b], share))
                           for a, b in zip(edges[:-1], edges[1:])], 1)


def rest_variants(x: np.ndarray, has_region: np.ndarray, widths: list[int]) -> dict[str, np.ndarray]:
    """Every transform of the rest's vectors (the images with a region), each learned on the normal group alone."""
    normal = x[~has_region]
    from anomaly_clustering.plugins.multiview.clusterers import normal_directions

    mu, vt, var = normal_basis(normal)
    rest = x[has_region]
    out = {f"nap {r}": project_out(rest, vt[:r]) for r in NAP_COMPONENTS}
    out.update({f"nap f={f}": project_out(rest, normal_directions(normal, f)) for f in NAP_SHARES})  # the default's rule
    out.update({f"whiten a={a}": whiten(rest, mu, vt, var, a) for a in WHITEN_SHRINK})
    out.update({f"nap/view f={f}": per_view_removal(x, has_region, widths, f) for f in NAP_SHARES})
    out.update({f"ratio {m}": discriminant(rest, normal, m) for m in DISCRIMINANT_DIMS})
    return out


def row_of(images, path, saved) -> dict[str, float]:
    """NMI of the default and of each transform of the rest, on one saved set × seed; and two rules that use the
    normal directions (F = 0.5) beyond the set-aside case: the structure check made after the removal, and the
    removal applied to Ward on all images where the rule stays off."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from anomaly_clustering.plugins.multiview.clusterers import NormalFirstClusterer, normal_directions
    from anomaly_clustering.records import Embeddings

    has_region, info = region_info(saved)
    blocks = saved_blocks(saved)
    x = descriptor(blocks, has_region).astype(np.float64)
    true, k = saved["true"], int(saved["k"])

    def normal_first(v: np.ndarray):
        return NormalFirstClusterer(n_clusters=k, normal_by="region").fit_predict(Embeddings.per_image(v.astype(np.float32), info))

    res = normal_first(x)
    aside = bool(res.info["normal_set_aside"])
    print(f"{Path(path).stem}: normal group set aside: {aside}", flush=True)
    row = {"default": float(nmi(true, res.labels))}
    for name, rest in rest_variants(x, has_region, [blocks[n].shape[1] for n in ("eq2", "avg512", "ctx384", "crop224")]).items():
        labels = np.full(len(x), k - 1, np.int64)
        labels[has_region] = ward(rest, k - 1)
        row[name] = float(nmi(true, labels)) if aside else row["default"]
    projected = project_out(x, normal_directions(x[~has_region], 0.5))
    row["check after removal"] = float(nmi(true, normal_first(projected).labels))
    row["removal, rule off too"] = row["nap f=0.5"] if aside else float(nmi(true, ward(projected, k)))
    return row


def main() -> None:
    run_saved_views(saved_views_parser().parse_args(), row_of, width=14)


if __name__ == "__main__":
    main()

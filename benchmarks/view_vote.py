"""Let the views vote instead of concatenating them? Two unsupervised ways to combine the default's four views.

    ANOMALY_CLUSTERING_CACHE=CACHE python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks BLOCKS
    python benchmarks/view_vote.py --blocks BLOCKS [--out vote.json]

Each view that carries a set's types is diluted by the views that do not (DeepPCB: the crop and the eq. 2 views
against the whole-image ones; NEU-DET: the other way round). Per set × seed, Ward at the true K on `multiview-all`'s
four views (eq. 2, mean-pooled, deep context, the crop for images with a region) is set against:

- ``consensus``: each view clustered by Ward on its own, the four partitions' co-association matrix cut by average
  linkage (every view one vote);
- ``agree-weighted``: each view weighted by its partition's mean NMI with the other views' partitions (a view that
  agrees with the others is trusted more), then Ward on the concatenation.

And, with the default's clusterer (``normal-first``), the whole-image views (mean-pooled + context) at lower weights
(``whole xW``), and the crop for every image instead of only those with a region (``crop for all``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_harness import (  # noqa: E402
    normal_first_nmi, region_info, run_saved_views, saved_views_parser, ward,
)

#: Weights of the whole-image views tried beside the default's 1.
WHOLE_WEIGHTS = (0.7, 0.5, 0.35, 0.25)


def view_blocks(d) -> dict[str, np.ndarray]:
    """The default's four standardised views of one saved file (the crop zero where the binarizer found no region)."""
    has_region, _ = region_info(d)
    return {"eq2": d["block_eq2"], "avg512": d["block_avg512"], "ctx384": d["block_ctx384"],
            "crop224": d["block_crop224"] * has_region[:, None]}


def combinations(views: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """Labels of Ward on all views, of the views' consensus and of the agreement-weighted concatenation."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import normalized_mutual_info_score as nmi

    names = list(views)
    parts = {v: ward(x, k) for v, x in views.items()}
    agree = np.array([np.mean([nmi(parts[a], parts[b]) for b in names if b != a]) for a in names])
    co = np.mean([parts[v][:, None] == parts[v][None, :] for v in names], axis=0)
    consensus = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average").fit_predict(1.0 - co)
    weights = agree / agree.mean()
    weighted = np.concatenate([views[v] * w for v, w in zip(names, weights)], 1)
    return {"ward all": ward(np.concatenate(list(views.values()), 1), k), "consensus": consensus,
            "agree-weighted": ward(weighted, k)}


def default_variants(saved) -> dict[str, float]:
    """NMI of the default's clusterer on the default's views with lighter whole-image views / an ungated crop."""
    v = view_blocks(saved)
    out = {"default": normal_first_nmi(np.concatenate(list(v.values()), 1), saved)}
    for w in WHOLE_WEIGHTS:
        out[f"whole x{w}"] = normal_first_nmi(np.concatenate([v["eq2"], w * v["avg512"], w * v["ctx384"], v["crop224"]], 1), saved)
    out["crop for all"] = normal_first_nmi(np.concatenate([v["eq2"], v["avg512"], v["ctx384"], saved["block_crop224"]], 1), saved)
    return out


def main() -> None:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    args = saved_views_parser().parse_args()

    def row_of(images, path, d) -> dict[str, float]:
        row = {n: float(nmi(d["true"], labels)) for n, labels in combinations(view_blocks(d), int(d["k"])).items()}
        return {**row, **default_variants(d)}

    run_saved_views(args, row_of, width=16)


if __name__ == "__main__":
    main()

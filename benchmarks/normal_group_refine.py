"""Two changes to the default's ``normal-first`` rule, on the views saved by ``classifier_ablation.py --save_blocks``.

    python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks BLOCKS
    python benchmarks/normal_group_refine.py --blocks BLOCKS [--out refine.json]

The default sets the images the binarizer left without a region aside as one cluster when they are a majority (and
look like one population). Two ideas, each measured against it per set and seed:

- ``share 1/K``: set the group aside when it holds at least 1/K of the images (as many as an average type), not
  half; the structure check still guards. Aimed at sets where good images are one type among K of similar size.
- ``reassign``: the group as set aside also holds defective images the binarizer missed (MTD: 40–47 % of its
  defective tiles). Once Ward has split the rest, every image of the group joins the nearest of the normal centroid
  and the K − 1 type centroids, compared on the views every image has (not the crop, which only images with a
  region carry), after the normal group's own variation is removed as in the default: the clusterer's own
  ``reassign_normal`` option (on in the default since 2026-12-07).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from normal_first_rule import descriptor  # noqa: E402  (`multiview-all`'s vectors from the saved views)
from view_harness import print_summary, region_info, saved_blocks, saved_view_sets, saved_views_parser, seed_of  # noqa: E402



def variants(saved) -> dict[str, float]:
    """NMI of the default and of each change on one saved set × seed (``set aside`` columns: 1.0 where the rule fired)."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from anomaly_clustering.plugins.multiview.clusterers import NormalFirstClusterer
    from anomaly_clustering.records import Embeddings

    true, k = saved["true"], int(saved["k"])
    has_region, info = region_info(saved)
    emb = Embeddings.per_image(descriptor(saved_blocks(saved), has_region), info)
    row = {}
    for name, share in (("default", 0.5), ("share 1/K", 1.0 / k)):
        for reassign in (False, True):
            c = NormalFirstClusterer(n_clusters=k, normal_by="region", normal_variation=0.5, min_normal_share=min(share, 0.5),
                                     reassign_normal=reassign)
            res = c.fit_predict(emb)
            label = f"{name} + reassign" if reassign else name
            row[label] = float(nmi(true, res.labels))
            if reassign:
                row[f"{label}: moved"] = res.info.get("normal_reassigned", 0) / max(1, int((~has_region).sum()))
            else:
                row[f"{name}: set aside"] = float(c.normal_set_aside_)
    return row


def main() -> None:
    args = saved_views_parser().parse_args()
    results = {}
    for s, _images, files in saved_view_sets(args):
        rows = []
        for f in files:
            saved = np.load(f)
            rows.append({"seed": seed_of(f), "floor": float(saved["floor"]), **variants(saved)})
        results[s.name] = rows
        scored = [{k: v for k, v in r.items() if ":" not in k} for r in rows]
        print_summary(s.name, scored, width=26)
        for key in [n for n in rows[0] if ":" in n]:
            print(f"  {s.name:<13} {key:<26} " + ", ".join(f"{r[key]:.2f}" for r in rows), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

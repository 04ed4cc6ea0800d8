"""Which per-image verdict "this image has an anomaly" serves the default classifier best? The `hysteresis`
binarizer's (Otsu on the image scores) against Otsu on the log scores, on the mean of the map's top 1 %, and on its
log, each used where the default uses the binarizer's verdict (the crop view's gate and the `normal-first` rule).

    ANOMALY_CLUSTERING_CACHE=CACHE python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks BLOCKS
    ANOMALY_CLUSTERING_CACHE=CACHE python benchmarks/gate_variants.py --blocks BLOCKS [--out gates.json]

The maps come from the stage cache the first command filled (same fit configuration). Per set: g (mean and worst
seed) of `multiview-all-normal-first` on the saved views under each verdict, the share of good images without a
region, the share of defective images with one, and on how many seeds the normal group was set aside.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classifier_ablation import _fit  # noqa: E402  (benchmarks/ is the script folder)
from normal_first_rule import descriptor, good_label  # noqa: E402
from view_harness import saved_view_sets, saved_views_parser  # noqa: E402


def verdicts(maps, images) -> dict[str, np.ndarray]:
    """Per image, whether it is flagged as anomalous, under each rule."""
    from anomaly_clustering.plugins.multiview.clusterers import otsu_split
    from anomaly_clustering.plugins.mutual.binarizer import HysteresisThreshold, top_values
    from anomaly_clustering.regions import otsu_threshold

    scores = np.asarray(maps.scores, np.float64)
    top = top_values(np.asarray(maps.maps, np.float32), 0.01).astype(np.float64)
    masks = HysteresisThreshold().fit_transform(maps, images).masks
    return {"hysteresis (default)": masks.reshape(len(scores), -1).any(1),
            "otsu on log score": np.log(scores) > otsu_split(np.log(scores))[0],
            "otsu on top 1 %": top > otsu_threshold(top),
            "otsu on log top 1 %": np.log(top) > otsu_split(np.log(top))[0]}


def main() -> None:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from anomaly_clustering.benchmarking import gap_closed
    from anomaly_clustering.plugins.multiview.clusterers import NormalFirstClusterer
    from anomaly_clustering.records import Embeddings

    args = saved_views_parser().parse_args()
    results: dict[str, dict] = {}
    for s, images, files in saved_view_sets(args):
        good = good_label(s)
        rows: dict[str, list] = {}
        for f in files:
            d = np.load(f)
            seed = int(f.stem.rsplit("_seed", 1)[1])
            true, k, floor = d["true"], int(d["k"]), float(d["floor"])
            maps = _fit(images, args.localizer, "average", seed, k, []).maps
            views = {n[6:]: d[n] for n in d.files if n.startswith("block_")}
            for name, flagged in verdicts(maps, images).items():
                info = {"has_region": flagged.tolist(), "image_scores": np.asarray(maps.scores, np.float64).tolist()}
                res = NormalFirstClusterer(n_clusters=k, normal_by="region").fit_predict(Embeddings.per_image(descriptor(views, flagged), info))
                v = float(nmi(true, res.labels))
                defective = true != good if good is not None else np.ones(len(true), bool)
                rows.setdefault(name, []).append({
                    "seed": seed, "nmi": v, "g": gap_closed(v, floor), "set_aside": bool(res.info["normal_set_aside"]),
                    "good_empty": float((~flagged[~defective]).mean()) if (~defective).any() else None,
                    "defective_flagged": float(flagged[defective].mean())})
        results[s.name] = rows
        for name, r in rows.items():
            g = [e["g"] for e in r]
            ge = [e["good_empty"] for e in r if e["good_empty"] is not None]
            print(f"{s.name:13s} {name:22s} g {np.mean(g):+.3f} (worst {min(g):+.3f})   good empty "
                  + (f"{np.mean(ge):.2f}" if ge else "  – ") + f"   defective flagged {np.mean([e['defective_flagged'] for e in r]):.2f}"
                  f"   set aside {sum(e['set_aside'] for e in r)}/{len(r)}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

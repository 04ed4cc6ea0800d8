"""Does an orientation-free crop view keep the crop's gain without its cost on objects? (issue #21)

    ANOMALY_CLUSTERING_DATA=../shared/data python benchmarks/crop_invariance.py --localizer fca-vae \
        --sets mvtec_bottle mtd neu_det deeppcb --seeds 0,1,2 --out crop-invariance.json

Per suite set and seed, on the suite's images and the localizer's maps (the benchmark's own configuration, so the
stage cache is shared with ``anomaly-cluster benchmark``): the four views of ``multiview-all`` (eq. 2 anomaly
descriptor, mean-pooled features, deep context at 384 px, the full-resolution crop around the map's peak region for
images the ``hysteresis`` binarizer gives a region), clustered by Ward at the true K, with the crop view pooled
either as ``multiview`` pools it (``plain``) or averaged over the eight rotations and flips of the crop (``d4``: a
defect's kind does not depend on which way it points, and on an object a crop's orientation tells where on the
object it was cut). Prints NMI and g = (NMI − floor)/(1 − floor) per variant, set and seed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classifier_ablation import _fit  # noqa: E402  (benchmarks/ is the script folder)
from view_harness import add_suite_arguments, standardise, ward  # noqa: E402

LITE = "tf_efficientnet_lite0"


def d4_batch(x: torch.Tensor) -> list[torch.Tensor]:
    """The eight images of the dihedral group D4 of a B×C×H×W batch: four rotations, each also mirrored."""
    rots = [torch.rot90(x, r, dims=(2, 3)) for r in range(4)]
    return rots + [torch.flip(r, dims=(3,)) for r in rots]


@torch.no_grad()
def d4_crop_view(images, boxes: np.ndarray, size: int = 224, batch_size: int = 16) -> np.ndarray:
    """N×D: per image, the mean over D4 of the crop's pooled stage-16/32 mean/std statistics."""
    from anomaly_clustering import runtime
    from anomaly_clustering.backbones import FeatureSpec, get_backbone
    from anomaly_clustering.plugins.multiview.views import crop_batch, pooled_statistics

    backbone = get_backbone(FeatureSpec(LITE, ("3", "4"), size)).to(runtime.device())
    rows = []
    for s in range(0, len(images), batch_size):
        x = crop_batch(images.paths[s : s + batch_size], boxes[s : s + batch_size], size).to(runtime.device())
        stats = [pooled_statistics(backbone.forward_layers(v)) for v in d4_batch(x)]
        rows.append(torch.stack(stats).mean(0).cpu().numpy())
    return np.concatenate(rows).astype(np.float32)


def main() -> None:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from anomaly_clustering import runtime
    from anomaly_clustering.backbones import FeatureSpec
    from anomaly_clustering.benchmarking import gap_closed, load_suite, select_images
    from anomaly_clustering.data import load_ground_truth
    from anomaly_clustering.plugins.blind_lca.descriptor import WeightedDescriptor
    from anomaly_clustering.plugins.multiview.views import anomaly_boxes, view_vectors
    from anomaly_clustering.plugins.mutual.binarizer import HysteresisThreshold

    ap = argparse.ArgumentParser()
    add_suite_arguments(ap, localizer="fca-vae")
    ap.add_argument("--fit_options", default="")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, list[dict]] = {}
    for s in load_suite(args.suite, args.data_root):
        if args.sets and s.name not in args.sets:
            continue
        images = select_images(s.data, s.subset, s.subset_seed, s.exclude_good)
        true, _ = load_ground_truth(images).label_ids()
        k = int(s.n_clusters)
        with runtime.settings(quiet=True):
            ctx = standardise(view_vectors(images, "context", FeatureSpec(LITE, ("3", "4"), 384), ("mean", "std")))
        for seed in seeds:
            t0 = time.perf_counter()
            floor_res = _fit(images, args.localizer, "average", seed, k, shlex.split(args.fit_options))
            floor = float(nmi(true, floor_res.clustering.labels))
            maps = floor_res.maps
            with runtime.settings(quiet=True):
                eq2, avg = WeightedDescriptor(context_weight=1.0)._blocks(images, maps)
                boxes = anomaly_boxes(np.asarray(maps.maps), np.asarray(maps.image_sizes))
                plain = view_vectors(images, "crop", FeatureSpec(LITE, ("3", "4"), 224), ("mean", "std"), boxes)
                d4 = d4_crop_view(images, boxes)
            gate = np.asarray(HysteresisThreshold().fit_transform(maps, images).masks).reshape(len(images), -1).any(1)
            base = [standardise(eq2), standardise(avg), ctx]
            row = {"seed": seed, "floor": floor, "crop_share": float(gate.mean())}
            for name, crop in (("plain", plain), ("d4", d4)):
                x = np.concatenate([*base, standardise(crop) * gate[:, None]], 1)
                row[name] = float(nmi(true, ward(x, k)))
                row[f"g_{name}"] = gap_closed(row[name], floor)
            results.setdefault(s.name, []).append(row)
            print(f"{s.name} seed {seed}: floor {floor:.3f}  plain {row['plain']:.3f} (g {row['g_plain']:+.3f})  "
                  f"d4 {row['d4']:.3f} (g {row['g_d4']:+.3f})  crops {gate.mean():.2f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        for name in ("plain", "d4"):
            g = [r[f"g_{name}"] for r in results[s.name]]
            print(f"  {s.name} {name}: g {np.mean(g):+.3f} ± {np.std(g):.3f} (worst {min(g):+.3f})", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

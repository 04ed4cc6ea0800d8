"""Which classifier holds on every suite set: a cheap ablation over cached views, at the true K, over seeds.

    ANOMALY_CLUSTERING_CACHE=/some/cache python benchmarks/classifier_ablation.py --suite benchmarks/suite.yaml \
        --localizer mutual --seeds 0,1,2 --out ablation.json [--fit_options "--localizer.self_weight 0.25" --tag _sw025]

Per set and seed: the suite's images, the localizer's maps and the floor (Average + Ward) through the same pipeline
configuration as ``anomaly-cluster benchmark`` (so both share the stage cache), then views computed once and cached
(eq. 2 anomaly descriptor, mean-pooled default features, deep-stage context statistics, full-resolution anomaly
crops) and every variant — a weighted concatenation of standardised views — clustered by Ward at the true K. Prints
NMI and the gap closed g = (NMI − floor)/(1 − floor) per variant, mean and worst over seeds. The crop view can be
weighted per image by a gate from the image score (``otsu``: Otsu's split of the log scores; ``rank``: the score's
rank in the set) or the binarizer's verdict (``mask``: the image has a region), so that images that look normal
are described by their context only. ``--view_backbone`` describes the views by another backbone (the maps and
the floor stay the same; ``benchmarks/view_backbone.py`` compares the saved views).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_harness import add_suite_arguments, standardise, ward  # noqa: E402  (benchmarks/ is the script folder)


def _fit(images, loc: str, clf: str, seed: int, k: int, extra: list[str]):
    """The benchmark's own configuration for (loc, clf, seed), fitted through the stage cache."""
    from anomaly_clustering import config, runtime
    from anomaly_clustering.pipeline import Pipeline

    argv, chosen = config.prescan(["--localizer", loc, "--classifier", clf, "--data", images.root, *extra])
    cfg = config.parse_args(config.build_fit_parser(chosen), argv)
    cfg.n_clusters = k
    cfg.seed = seed
    return Pipeline(config.config_from_namespace(cfg), runtime.cache_dir(), quiet=True).fit(images)


def gates(scores: np.ndarray, masks: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per-image crop weights in [0, 1] from the image scores (and the binarizer's masks)."""
    from anomaly_clustering.plugins.multiview.clusterers import otsu_split

    s = np.log(np.maximum(np.asarray(scores, np.float64), 1e-12))
    t, _ = otsu_split(s)
    out = {"otsu": (s > t).astype(np.float64), "rank": (np.argsort(np.argsort(s)) + 0.5) / len(s)}
    if masks is not None:
        out["mask"] = np.asarray(masks).reshape(len(masks), -1).any(1).astype(np.float64)
    return out


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
    add_suite_arguments(ap, localizer="mutual")
    ap.add_argument("--context_sizes", default="384", help="comma-separated sizes of the deep-stage context view")
    ap.add_argument("--no_crop", action="store_true", help="skip the crop views (their backbone pass)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--save_blocks", default=None, help="folder: every set × seed's standardised views, labels and gates (.npz) for re-analysis")
    ap.add_argument("--fit_options", default="", help='extra fit options for the localizer\'s run, one shell-quoted string, '
                    'e.g. "--localizer.self_weight 0.25"')
    ap.add_argument("--view_backbone", default="tf_efficientnet_lite0", help="backbone of the eq. 2, average, context and crop "
                    "views (the floor stays Sohn's Average on the default backbone)")
    ap.add_argument("--tag", default="", help="suffix of the saved block files: {set}_{localizer}{tag}_seed{seed}.npz")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = shlex.split(args.fit_options)
    lite = args.view_backbone
    results = {}
    for s in load_suite(args.suite, args.data_root):
        if args.sets and s.name not in args.sets:
            continue
        t0 = time.perf_counter()
        images = select_images(s.data, s.subset, s.subset_seed, s.exclude_good)
        true, _ = load_ground_truth(images).label_ids()
        k = int(s.n_clusters) if s.n_clusters != "gt" else len(set(true.tolist()))
        shared = {}
        with runtime.settings(quiet=True):
            for size in (int(v) for v in args.context_sizes.split(",")):
                shared[f"ctx{size}"] = standardise(view_vectors(images, "context", FeatureSpec(lite, ("3", "4"), size), ("mean", "std")))
        per_seed = []
        for seed in seeds:
            floor_res = _fit(images, args.localizer, "average", seed, k, extra)
            floor = nmi(true, floor_res.clustering.labels)
            maps = floor_res.maps
            wd = WeightedDescriptor(lite, context_weight=1.0)
            with runtime.settings(quiet=True):
                eq2, avg = wd._blocks(images, maps)
            blocks = {"eq2": standardise(eq2), "avg512": standardise(avg), **shared}
            masks = HysteresisThreshold().fit_transform(maps, images).masks
            g = gates(maps.scores, masks)
            if not args.no_crop:
                boxes = anomaly_boxes(np.asarray(maps.maps), np.asarray(maps.image_sizes))
                with runtime.settings(quiet=True):
                    blocks["crop224"] = standardise(view_vectors(images, "crop", FeatureSpec(lite, ("3", "4"), 224), ("mean", "std"), boxes))
            if args.save_blocks:
                Path(args.save_blocks).mkdir(parents=True, exist_ok=True)
                np.savez(Path(args.save_blocks) / f"{s.name}_{args.localizer}{args.tag}_seed{seed}.npz", true=true, k=k, floor=floor,
                         scores=np.asarray(maps.scores), **{f"block_{n}": b.astype(np.float32) for n, b in blocks.items()},
                         **{f"gate_{n}": w for n, w in g.items()})
            variants = {}

            def add(name: str, parts: list[tuple[str, float | np.ndarray]]) -> None:
                x = np.concatenate([blocks[b] * (w[:, None] if isinstance(w, np.ndarray) else float(w)) for b, w in parts], 1)
                variants[name] = float(nmi(true, ward(x, k)))

            add("anomaly-context (eq2 + avg512)", [("eq2", 1), ("avg512", 1)])
            add("eq2", [("eq2", 1)])
            for c in shared:
                add(c, [(c, 1)])
                add(f"eq2 + {c}", [("eq2", 1), (c, 1)])
                add(f"eq2 + avg512 + {c}", [("eq2", 1), ("avg512", 1), (c, 1)])
                add(f"avg512 + {c}", [("avg512", 1), (c, 1)])
                add(f"eq2 + {c} x0.5", [("eq2", 1), (c, 0.5)])
                add(f"eq2 x0.5 + {c}", [("eq2", 0.5), (c, 1)])
                if "crop224" in blocks:
                    add(f"{c} + crop224", [(c, 1), ("crop224", 1)])
                    add(f"eq2 + {c} + crop224", [("eq2", 1), (c, 1), ("crop224", 1)])
                    for gname, w in g.items():
                        add(f"{c} + crop224[{gname}]", [(c, 1), ("crop224", w)])
                        add(f"eq2 + {c} + crop224[{gname}]", [("eq2", 1), (c, 1), ("crop224", w)])
            per_seed.append({"seed": seed, "floor": floor, "variants": variants,
                             "flagged": {n: float(w.mean()) for n, w in g.items()}})
            print(f"{s.name} seed {seed}: floor {floor:.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        names = list(per_seed[0]["variants"])
        summary = {}
        for n in names:
            vals = [p["variants"][n] for p in per_seed]
            gs = [gap_closed(v, p["floor"]) for v, p in zip(vals, per_seed)]
            summary[n] = {"nmi": [float(np.mean(vals)), float(np.std(vals))], "g": [float(np.mean(gs)), float(np.std(gs))], "g_min": float(min(gs))}
        results[s.name] = {"N": len(images), "K": k, "localizer": args.localizer, "fit_options": extra, "per_seed": per_seed, "summary": summary,
                           "seconds": time.perf_counter() - t0}
        fl = [p["floor"] for p in per_seed]
        print(f"\n{s.name}: N={len(images)} K={k} floor {np.mean(fl):.3f} ({results[s.name]['seconds']:.0f} s) gates flagged "
              + ", ".join(f"{n} {np.mean([p['flagged'][n] for p in per_seed]):.2f}" for n in per_seed[0]["flagged"]), flush=True)
        for n, e in summary.items():
            print(f"  {n:<40} NMI {e['nmi'][0]:.3f} ± {e['nmi'][1]:.3f}   g {e['g'][0]:+.3f} ± {e['g'][1]:.3f} (worst {e['g_min']:+.3f})", flush=True)
        if args.out:
            with open(args.out, "w") as fh:
                json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()

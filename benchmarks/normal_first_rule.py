"""When does "normal first" fire, and what does it do? The `normal-first` clusterer's rules on the views saved by
``classifier_ablation.py --save_blocks``, per suite set and seed.

    python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks BLOCKS   # once per set
    python benchmarks/normal_first_rule.py --blocks BLOCKS --localizer fca-vae [--out rule.json]

The descriptor is `multiview-all`'s (eq. 2 + mean-pooled features + deep context + the crop of images with a
region, each view standardised). Per set × seed: the share of images the `hysteresis` binarizer leaves without a
region, the share of good images in that group (where the set has good images), the two silhouettes of the
structure check, and NMI / g of Ward on all (`multiview-all`), of `normal_by="region"` with and without the
structure check (the default and its unguarded variant), of `normal_by="score"` with η's condition dropped, and of
the default with the rest clustered without the average view (an idea measured, not adopted).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_harness import add_suite_arguments, ward  # noqa: E402  (benchmarks/ is the script folder)


def descriptor(blocks: dict[str, np.ndarray], has_region: np.ndarray) -> np.ndarray:
    """`multiview-all`'s vectors from the saved standardised views (the crop only for images with a region)."""
    return np.concatenate([blocks["eq2"], blocks["avg512"], blocks["ctx384"], blocks["crop224"] * has_region[:, None]], 1).astype(np.float32)


def good_label(suite_set) -> int | None:
    """The id of the `good` type among the set's labels (None: the set has no good images)."""
    from anomaly_clustering.benchmarking import select_images
    from anomaly_clustering.data import load_ground_truth

    images = select_images(suite_set.data, suite_set.subset, suite_set.subset_seed, suite_set.exclude_good)
    _, names = load_ground_truth(images).label_ids()
    return list(names).index("good") if "good" in names else None


def main() -> None:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from anomaly_clustering.benchmarking import gap_closed, load_suite
    from anomaly_clustering.kselect import estimate_k
    from anomaly_clustering.plugins.multiview.clusterers import NormalFirstClusterer
    from anomaly_clustering.records import Embeddings

    ap = argparse.ArgumentParser()
    add_suite_arguments(ap, localizer="fca-vae")
    ap.add_argument("--blocks", required=True, help="the --save_blocks folder of classifier_ablation.py")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rules = {
        "ward (multiview-all)": None,
        "region + structure check (default)": {"normal_by": "region"},
        "region, no check": {"normal_by": "region", "structure_check": False},
        "score, no eta condition": {"normal_by": "score", "min_separability": 0.0},
    }
    results = {}
    for s in load_suite(args.suite, args.data_root):
        if args.sets and s.name not in args.sets:
            continue
        files = sorted(Path(args.blocks).glob(f"{s.name}_{args.localizer}{args.tag}_seed*.npz"))
        if not files:
            continue
        good = good_label(s)
        rows = []
        for f in files:
            d = np.load(f)
            true, k, floor = d["true"], int(d["k"]), float(d["floor"])
            has_region = d["gate_mask"] > 0
            x = descriptor({n[6:]: d[n] for n in d.files if n.startswith("block_")}, has_region)
            info = {"has_region": has_region.tolist(), "image_scores": np.asarray(d["scores"], np.float64).tolist()}
            row = {"file": f.name, "k": k, "empty_share": float((~has_region).mean()),
                   "good_in_empty": float((true[~has_region] == good).mean()) if good is not None and (~has_region).any() else None}
            for name, options in rules.items():
                if options is None:
                    v = float(nmi(true, ward(x.astype(np.float64), k)))
                    row[name] = {"nmi": v, "g": gap_closed(v, floor), "set_aside": False}
                    continue
                res = NormalFirstClusterer(n_clusters=k, **options).fit_predict(Embeddings.per_image(x, info))
                v = float(nmi(true, res.labels))
                row[name] = {"nmi": v, "g": gap_closed(v, floor), "set_aside": bool(res.info["normal_set_aside"])}
                if "silhouette_normal" in res.info and options == {"normal_by": "region"}:
                    row["silhouettes (empty, with region)"] = [res.info["silhouette_normal"], res.info["silhouette_rest"]]
            # a variant not adopted: once the normal group is set aside, cluster the rest without the whole-image
            # average view (the type is in the anomaly); measured to say what it would give, chosen on nothing
            default = row["region + structure check (default)"]
            if default["set_aside"]:
                rest = np.flatnonzero(has_region)
                views = {n[6:]: d[n] for n in d.files if n.startswith("block_")}
                xr = np.concatenate([views["eq2"][rest], views["ctx384"][rest], views["crop224"][rest]], 1).astype(np.float64)
                labels = np.full(len(true), k - 1)
                labels[rest] = ward(xr, k - 1)
                v = float(nmi(true, labels))
                row["default, rest without avg512"] = {"nmi": v, "g": gap_closed(v, floor), "set_aside": True}
            else:
                row["default, rest without avg512"] = dict(default)
            # K unknown: `auto` reads the whole embedding; where the group is set aside, 1 + the estimate on the rest
            row["K auto (all)"] = int(estimate_k(x.astype(np.float64), 2, 10, "auto", seed=0)[0])
            rest = np.flatnonzero(has_region)
            row["K auto (1 + rest)"] = (1 + int(estimate_k(x[rest].astype(np.float64), 2, 10, "auto", seed=0)[0])
                                        if default["set_aside"] and len(rest) > 11 else row["K auto (all)"])
            rows.append(row)
        results[s.name] = rows
        print(f"\n{s.name} ({len(rows)} seeds): images without a region "
              + ", ".join(f"{r['empty_share']:.2f}" for r in rows)
              + ("" if good is None else "; good among them " + ", ".join(f"{r['good_in_empty']:.2f}" for r in rows)))
        sil = [r.get("silhouettes (empty, with region)") for r in rows]
        if any(sil):
            print("  silhouettes empty vs with region: " + ", ".join(f"{a:.3f} vs {b:.3f}" for a, b in (p for p in sil if p)))
        print("  K auto on the whole embedding " + ", ".join(str(r["K auto (all)"]) for r in rows)
              + f" (truth {rows[0]['k']}); 1 + K auto on the images with a region where the group is set aside "
              + ", ".join(str(r["K auto (1 + rest)"]) for r in rows))
        for name in [*rules, "default, rest without avg512"]:
            vals = [r[name]["nmi"] for r in rows]
            gs = [r[name]["g"] for r in rows]
            fired = sum(r[name]["set_aside"] for r in rows)
            print(f"  {name:<36} NMI {np.mean(vals):.3f} ± {np.std(vals):.3f}   g {np.mean(gs):+.3f} (worst {min(gs):+.3f})   set aside on {fired}/{len(rows)} seeds")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

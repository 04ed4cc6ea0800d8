"""AnomalyNCD (hybrid MGViT, CPU) quality on MTD's five defect classes (K = 5, good excluded), beside the paper.

    export ANOMALY_CLUSTERING_CACHE=CACHE
    nice -n 10 python benchmarks/ncd_quality.py --data ../shared/data/mtd/test --epochs 20 --repeats 2

Rows: the ``oracle`` binarizer (ground-truth masks: the paper's Table I "GT-mask-like" setting, there on MVTec AD) and
MEBin on a localizer's maps (color-stats, or fca when installed: the paper's Table II uses MuSc), each followed by
region merging (T = 50 for MTD); Sohn's Average (mean-pooled features + Ward) is the floor on the same images.
Epochs are kept small on the CPU (the paper trains 50 epochs × 4 repeats of a ViT-B/8 on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from anomaly_clustering import registry, runtime
from anomaly_clustering.data import load_image_set
from anomaly_clustering.metrics import clustering_scores

from data_paths import default_set  # noqa: E402  (benchmarks/ is the script folder)

os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")  # benchmarks use local weights only, never a hub download

PAPER = {
    "MTD, MuSc + AnomalyNCD (Table II)": (0.268, 0.228, 0.509),
    "MVTec AD, GT-mask-like input (Table I)": (0.871, 0.851, 0.909),
}


def labels_of(images) -> np.ndarray:
    kinds = [n.split("/")[0] for n in images.names]
    names = sorted(set(kinds))
    return np.array([names.index(k) for k in kinds])


def ok(kind: str, name: str) -> bool:
    info = registry.discover()[kind].get(name)
    return bool(info and info.ok)


def fmt(s) -> str:
    return f"{s.nmi:.3f}/{s.ari:.3f}/{s.f1_micro:.3f}"


def run_ncd(images, maps, regions, k: int, opts: dict, temperature: float):
    """Fit the representation, merge regions; (scores, seconds, representation, embeddings)."""
    t0 = time.perf_counter()
    rep = registry.create("representation", "mgvit-ncd", n_clusters=k, **opts)
    emb = rep.fit_transform(images, maps, regions)
    clu = registry.create("clusterer", "region-merge", n_clusters=k, temperature=temperature).fit_predict(emb)
    if "collapse_fallback" in clu.info:
        print(f"    (collapse guard: {clu.info['collapse_fallback']})")
    return clustering_scores(labels_of(images), clu.labels), time.perf_counter() - t0, rep, emb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=default_set("mtd"), help="a labelled set (default: $ANOMALY_CLUSTERING_DATA or ../shared/data, mtd/test)")
    ap.add_argument("--exclude", default="good/*")
    ap.add_argument("--k", type=int, default=0)
    ap.add_argument("--localizers", default="fca,color-stats")
    ap.add_argument("--map_size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--input_size", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=50.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip_average", action="store_true")
    ap.add_argument("--binarizers", default="oracle,mebin")
    ap.add_argument("--localizer_option", action="append", default=[], help="name.key=value for one localizer, e.g. musc.max_reference_images=100")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images = load_image_set(args.data, exclude=[args.exclude] if args.exclude else [])
    labels = labels_of(images)
    k = args.k or len(np.unique(labels))
    opts = dict(epochs=args.epochs, repeats=args.repeats, lr=args.lr, input_size=args.input_size)
    print(f"{len(images)} images, K = {k}; hybrid MGViT (tf_efficientnet_lite0 tokens), {args.epochs} epochs × {args.repeats} repeats, "
          f"view {args.input_size} px, lr {args.lr}, T = {args.temperature}, CPU, {args.threads} thread(s)")
    for name, s in PAPER.items():
        print(f"  paper {name:<45} NMI/ARI/F1 {s[0]:.3f}/{s[1]:.3f}/{s[2]:.3f}")
    with runtime.settings(quiet=True):
        for loc in [l for l in args.localizers.split(",") if ok("localizer", l)]:
            lopts = {"input_size": args.map_size} if loc == "color-stats" else {}
            for kv in args.localizer_option:
                key, value = kv.split("=", 1)
                if key.startswith(loc + "."):
                    try:  # numbers and true/false/null as JSON, anything else as a string
                        lopts[key.split(".", 1)[1]] = json.loads(value)
                    except ValueError:
                        lopts[key.split(".", 1)[1]] = value
            t0 = time.perf_counter()
            maps = registry.create("localizer", loc, **lopts).fit_predict(images)
            t_loc = time.perf_counter() - t0
            for binz in args.binarizers.split(","):
                regions = registry.create("binarizer", binz).fit_transform(maps, images)
                s, sec, rep, emb = run_ncd(images, maps, regions, k, opts, args.temperature)
                print(f"  ours  {loc:>11} maps + {binz:<6} ({len(emb.vectors)} crops, head {rep.best_head_})  NMI/ARI/F1 {fmt(s)}"
                      f"   [{sec:.0f} s train+infer, {t_loc:.0f} s localize]", flush=True)
            if loc == "color-stats":
                break  # one localizer with oracle masks is enough; fca (when present) comes first
        if not args.skip_average:
            t0 = time.perf_counter()
            emb = registry.create("representation", "average").fit_transform(images, None, None)
            pred = registry.create("clusterer", "ward", n_clusters=k).fit_predict(emb).labels
            print(f"  floor Sohn's Average (lite0, 512 px, Ward)               NMI/ARI/F1 {fmt(clustering_scores(labels, pred))}"
                  f"   [{time.perf_counter() - t0:.0f} s]")


if __name__ == "__main__":
    main()

"""Cost of the localizers at growing set sizes: seconds per image and peak resident memory, one process per point.

MuSc compares every image with (up to ``max_reference_images``) others, so its time grows as N·min(N, cap);
blind PatchCore's coreset selection grows as N²·ratio; FCA is per image. Each (localizer, N) runs in a fresh
subprocess with an empty feature cache (backbone features are part of the cost), so its peak RSS is its own.
Images: a class-stratified subset of ``--set``'s test images; data by ``--data`` or ``$ANOMALY_CLUSTERING_DATA``, else
``../shared/data`` beside the repository. The machine's load average is printed with the table (shared machines).

    python benchmarks/localizer_scaling.py --sizes 50 200 800 --input_size 128
    python benchmarks/localizer_scaling.py --set deeppcb --sizes 200 1000 4000 --localizers mutual --input_size 128

``--kernels`` times only mutual's scoring kernels per query image on random patch tensors of the real shapes
(P = 256 patches of D = 304 dims at 128 px): mutual scoring against 64 / 128 references and the within-image term
(``self_weight``), best of 3 repeats, so a loaded machine inflates the figures less than the end-to-end points:

    python benchmarks/localizer_scaling.py --kernels --threads 2

Localization quality (PRO, AUROC) is ``benchmarks/localization_quality.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")  # benchmarks use local weights only, never a hub download

DATA = Path(os.environ.get("ANOMALY_CLUSTERING_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def one_point(args) -> None:
    """Child process: fit+predict one localizer on N images, print one JSON line."""
    import numpy as np
    import torch

    from anomaly_clustering import runtime
    from anomaly_clustering.data import load_ground_truth, load_image_set
    from anomaly_clustering.registry import create

    sys.path.insert(0, str(Path(__file__).parent))
    from localization_quality import stratified

    torch.set_num_threads(args.threads)
    images = load_image_set(Path(args.data) / args.set / "test")
    labels = list(load_ground_truth(images).labels)
    if args.n < len(images):
        images = images.subset(stratified(labels, args.n).tolist())
    options = json.loads(args.options)
    import shutil
    import tempfile

    cache = tempfile.mkdtemp(prefix="loc_scaling_")  # an empty cache: backbone features are part of the cost
    with runtime.settings(quiet=True, cache_dir=cache):
        loc = create("localizer", args.localizer, input_size=args.input_size, **options)
        t0 = time.perf_counter()
        maps = loc.fit_predict(images)
        seconds = time.perf_counter() - t0
    shutil.rmtree(cache, ignore_errors=True)
    print(json.dumps({
        "localizer": args.localizer, "n": len(images), "input_size": args.input_size, "options": options,
        "seconds": round(seconds, 1), "s_per_image": round(seconds / len(images), 3), "load_average": [round(x, 1) for x in os.getloadavg()],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "backbone": maps.info.get("backbone"),
        "map_mean": float(np.mean(maps.maps)),
    }))


def kernels(threads: int, queries: int = 128, patches: int = 256, dims: int = 304) -> None:
    """Seconds per query image of mutual's scoring kernels (best of 3 repeats), printed as a table."""
    import torch

    from anomaly_clustering.plugins.mutual.torch_model import mutual_scores, self_scores

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(queries, patches, dims, generator=gen)
    side = int(patches**0.5)
    jobs = {f"mutual, {m} references": (lambda m=m: mutual_scores(z, torch.randn(m, patches, dims, generator=gen))) for m in (64, 128)}
    jobs["within-image (self_weight > 0)"] = lambda: self_scores(z, (side, side))
    print(f"| kernel | s / image ({queries} queries, P = {patches}, D = {dims}, {threads} threads, best of 3) |\n|---|---|")
    for name, job in jobs.items():
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            job()
            best = min(best, time.perf_counter() - t0)
        print(f"| {name} | {best / queries:.4f} |  load average {os.getloadavg()[0]:.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA), help="folder holding the sets (default: $ANOMALY_CLUSTERING_DATA or ../shared/data)")
    ap.add_argument("--set", default="mtd")
    ap.add_argument("--sizes", nargs="+", type=int, default=[50, 200, 800])
    ap.add_argument("--localizers", nargs="+", default=["musc", "patchcore", "fca"])
    ap.add_argument("--input_size", type=int, default=128)
    ap.add_argument("--option", action="append", default=[], help="name.key=value for one localizer (JSON value)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--localizer", default="", help=argparse.SUPPRESS)
    ap.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--kernels", action="store_true", help="time only mutual's scoring kernels (see the module docstring)")
    args = ap.parse_args()
    if args.kernels:
        return kernels(args.threads)
    if args.localizer:
        return one_point(args)
    rows = []
    for name in args.localizers:
        opts = {}
        for kv in args.option:
            key, value = kv.split("=", 1)
            if key.startswith(name + "."):
                opts[key.split(".", 1)[1]] = json.loads(value)
        for n in args.sizes:
            cmd = [sys.executable, __file__, "--data", args.data, "--set", args.set, "--input_size", str(args.input_size), "--threads", str(args.threads),
                   "--n", str(n), "--localizer", name, "--options", json.dumps(opts)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{name} n={n} FAILED: {proc.stderr[-1500:]}", flush=True)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.set}, {args.input_size} px, {args.threads} threads\n")
    print("| localizer | options | N | s / image | total s | peak RSS MB | load average (1/5/15 min) at the end |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        load = " / ".join(str(x) for x in r.get("load_average", [])) or "–"
        print(f"| {r['localizer']} | {r['options'] or '–'} | {r['n']} | {r['s_per_image']} | {r['seconds']} | {r['peak_rss_mb']} | {load} |")


if __name__ == "__main__":
    main()

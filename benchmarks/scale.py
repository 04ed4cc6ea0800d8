"""Scale: seconds per stage, images per second and peak resident memory of one ``anomaly-cluster fit`` at growing N.

The images are the real test images of ``../shared/data`` (MTD, NEU-DET, MVTec bottle), repeated and augmented
(flips, 90° turns, a random crop of 80–100 % of the side, small brightness changes) until the set has N images, written
once as 128-px JPEGs. Each N runs in its own ``fit`` process (its peak RSS is the summary's ``peak_rss_mb``) with
its own empty stage cache, so nothing is reused between sizes.

    python benchmarks/scale.py --sizes 1000 4000 16000 --work runs/scale

Prints a markdown table, writes ``scale.json`` and ``scale.png`` (time and memory against N) in ``--work``, and an
extrapolation of the per-image cost to 100 k images.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from data_paths import data_root  # noqa: E402  (benchmarks/ is the script folder)

os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")  # benchmarks use local weights only, never a hub download

DATA = data_root()  # $ANOMALY_CLUSTERING_DATA or ../shared/data beside the repository
SETS = ("mtd", "neu_det", "mvtec_bottle")


def source_images() -> list[Path]:
    paths = []
    for name in SETS:
        paths += sorted(p for p in (DATA / name / "test").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    if not paths:
        raise SystemExit(f"no images under {DATA}: this benchmark needs the real sets of shared/data")
    return paths


def build_set(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` augmented copies of the real images at size×size (kept if already there)."""
    done = folder / ".complete"
    if done.exists() and int(done.read_text()) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    src = source_images()
    rng = np.random.default_rng(seed)
    for i in range(n):
        p = src[i % len(src)]
        img = Image.open(p).convert("RGB")
        if i >= len(src):  # the first pass is the real images themselves; later passes are augmented copies
            w, h = img.size
            f = rng.uniform(0.8, 1.0)
            cw, ch = int(w * f), int(h * f)
            x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            img = img.crop((x0, y0, x0 + cw, y0 + ch))
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            img = img.rotate(90 * int(rng.integers(0, 4)))
            img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))
        out = folder / p.parent.name / f"{i:06d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        img.resize((size, size), Image.BILINEAR).save(out, quality=90)
    done.write_text(str(n))
    return folder


def run_fit(data: Path, work: Path, args) -> dict:
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "anomaly_clustering.cli", "fit", "--data", str(data), "--run", str(run),
           "--cache_dir", str(work / "cache"), "--input_size", str(args.input_size), "--n_clusters", str(args.n_clusters),
           "--save_pngs", "false", "--quiet", "true", *args.fit_options.split()]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"fit failed at {data}:\n{proc.stderr[-3000:]}")
    summary = json.loads((run / "summary.json").read_text())
    shutil.rmtree(work / "cache", ignore_errors=True)  # disk: the next size starts from an empty cache anyway
    return {"wall_s": wall, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[1000, 4000, 16000])
    ap.add_argument("--work", default="runs/scale", help="scratch folder (generated images, runs, cache)")
    ap.add_argument("--image_size", type=int, default=128, help="side of the generated JPEGs")
    ap.add_argument("--input_size", type=int, default=128, help="network input side (fit --input_size)")
    ap.add_argument("--n_clusters", type=int, default=6)
    ap.add_argument("--fit_options", default="", help="extra fit options, e.g. '--localizer fca --classifier weighted'")
    args = ap.parse_args()
    work = Path(args.work)
    rows = []
    for n in args.sizes:
        data = build_set(work / f"data_{n}", n, args.image_size)
        res = run_fit(data, work / f"n{n}", args)
        s = res["summary"]
        timings = (s.get("localizer_info") or {}).get("timings", {})
        row = {
            "n": n, "wall_s": round(res["wall_s"], 1), "images_per_s": round(n / res["wall_s"], 1),
            "stages_s": {k: round(v, 1) for k, v in s["seconds"].items()}, "localizer_timings_s": {k: round(v, 1) for k, v in timings.items()},
            "peak_rss_mb": round(s["peak_rss_mb"]), "clusterer_info": s.get("clusterer_info"),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        (work / "scale.json").write_text(json.dumps(rows, indent=1))
    print_table(rows, args)
    plot(rows, work / "scale.png")


def print_table(rows: list[dict], args) -> None:
    stages = ["localizer", "binarizer", "representation", "clusterer"]
    print(f"\nfit {args.fit_options or '(defaults)'} --input_size {args.input_size}, {os.cpu_count()} CPU cores\n")
    print("| N | " + " | ".join(f"{s} s" for s in stages) + " | wall s | images / s | s / 1 k images | peak RSS MB |")
    print("|---" * (len(stages) + 5) + "|")
    for r in rows:
        per_k = 1000 * r["wall_s"] / r["n"]
        print(f"| {r['n']} | " + " | ".join(str(r["stages_s"].get(s, "–")) for s in stages)
              + f" | {r['wall_s']} | {r['images_per_s']} | {per_k:.1f} | {r['peak_rss_mb']} |")
    if len(rows) >= 2:  # marginal cost per image from the two largest sizes (the fixed costs, e.g. the VAE fit, drop out)
        a, b = rows[-2], rows[-1]
        per_image = (b["wall_s"] - a["wall_s"]) / (b["n"] - a["n"])
        fixed = b["wall_s"] - per_image * b["n"]
        print(f"\nmarginal cost {per_image * 1000:.1f} ms / image, fixed {fixed:.0f} s: 100 k images ≈ "
              f"{(fixed + per_image * 1e5) / 3600:.1f} h on this CPU")


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    n = [r["n"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].loglog(n, [r["wall_s"] for r in rows], "o-", label="measured")
    ax[0].loglog(n, [rows[0]["wall_s"] * k / n[0] for k in n], "--", label="linear")
    ax[0].set(xlabel="images", ylabel="fit seconds"), ax[0].legend()
    ax[1].semilogx(n, [r["peak_rss_mb"] for r in rows], "o-")
    ax[1].set(xlabel="images", ylabel="peak RSS (MB)", ylim=(0, None))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

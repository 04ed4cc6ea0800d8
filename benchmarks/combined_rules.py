"""Merge rules of the combined localizer (``fca-mutual``) on saved member maps: PRO@0.3, pixel and image AUROC, and
what the default ``hysteresis`` masks mean, per set, rule and seed — without re-running the members.

    python benchmarks/localization_quality.py --sets mtd deeppcb mvtec_bottle neu_det --localizers fca-vae mutual \
        --subset 200 --seeds 0 1 2 --maps_dir MAPS --binarizers hysteresis otsu --out members.json
    python benchmarks/combined_rules.py --maps_dir MAPS --subset 200 --seeds 0 1 2 --out rules.json

The members' maps must come from ``localization_quality.py --maps_dir`` on the same (sub)sets; each rule is applied
as :class:`~anomaly_clustering.plugins.combined.CombinedLocalizer` does (scales learned on the set itself; their
median / MAD sample is drawn with seed 0 for every run, the localizer's with its own ``seed``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import localization_quality as lq  # noqa: E402
from data_paths import data_root  # noqa: E402


def member_maps(maps_dir: Path, set_name: str, names: tuple[str, ...], seed: int, order: list[str]) -> list[torch.Tensor]:
    """Each member's saved maps (rows in the order of ``order``, the set's image names)."""
    out = []
    for name in names:
        z = np.load(maps_dir / f"{set_name}_{name}_every1_seed{seed}.npz")
        where = {n: i for i, n in enumerate(z["names"].tolist())}
        out.append(torch.from_numpy(np.asarray(z["maps"], np.float32)[[where[n] for n in order]]))
    return out


def combine(parts: list[torch.Tensor], rule: str, top_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    from anomaly_clustering.features_ops import topk_mean
    from anomaly_clustering.plugins.combined.torch_model import merge, resize_maps, robust_scale

    size = tuple(parts[0].shape[-2:])
    parts = [resize_maps(p, size) for p in parts]
    merged = merge([(p - m) / s for p, (m, s) in ((p, robust_scale(p)) for p in parts)], rule)
    return merged.numpy(), topk_mean(merged, top_fraction).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--maps_dir", required=True)
    ap.add_argument("--sets", nargs="*", default=["mtd", "deeppcb", "mvtec_bottle", "neu_det"])
    ap.add_argument("--members", nargs="*", default=["fca-vae", "mutual"])
    ap.add_argument("--rules", nargs="*", default=["geometric", "mean", "min"])
    ap.add_argument("--top_fractions", nargs="*", type=float, default=[0.01])
    ap.add_argument("--subset", type=int, default=200)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--eval_size", type=int, default=256)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from anomaly_clustering.data import load_ground_truth, load_image_set
    from anomaly_clustering.metrics import localization_scores
    from anomaly_clustering.records import AnomalyMaps
    from anomaly_clustering.registry import create

    root = Path(args.data) if args.data else data_root()
    rows = []
    for set_name in args.sets:
        images = load_image_set(root / set_name / "test")
        gt = load_ground_truth(images)
        if args.subset and args.subset < len(images):
            keep = lq.stratified(list(gt.labels), args.subset)
            images = images.subset(keep.tolist())
            gt = type(gt)(tuple(gt.labels[i] for i in keep), tuple(gt.mask_paths[i] for i in keep), gt.has_masks)
        bad = np.array([lab not in ("good", "ok", "normal") for lab in gt.labels])
        masks = np.stack([gt.load_mask(i, (args.eval_size,) * 2) for i in range(len(images))]) if gt.has_masks else None
        for seed in args.seeds:
            parts = member_maps(Path(args.maps_dir), set_name, tuple(args.members), seed, list(images.names))
            for rule in args.rules:
                for frac in args.top_fractions:
                    maps, scores = combine(parts, rule, frac)
                    up = F.interpolate(torch.from_numpy(maps)[:, None], size=(args.eval_size,) * 2, mode="bilinear", align_corners=False)[:, 0].numpy()
                    s = localization_scores(up, scores, masks, bad)
                    record = AnomalyMaps(maps, scores, np.tile(maps.shape[1:], (len(maps), 1)).astype(np.int64), {})
                    regions = create("binarizer", "hysteresis").fit_transform(record, images)
                    truth = np.stack([gt.load_mask(i, maps.shape[1:]) for i in range(len(images))]) if gt.has_masks else None
                    pct = lambda v: None if v is None else round(100 * v, 2)  # noqa: E731
                    rows.append({"set": set_name, "rule": rule, "top_fraction": frac, "seed": seed, "pro": pct(s.pro_30),
                                 "auroc_pixel": pct(s.auroc_pixel), "auroc_image": pct(s.auroc_image),
                                 "hysteresis": lq.mask_scores(np.asarray(regions.masks, bool), truth, bad)})
                    print(json.dumps(rows[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    print(summary(rows))


def summary(rows: list[dict]) -> str:
    """Mean ± std over seeds per set × rule × top fraction."""
    keys = sorted({(r["set"], r["rule"], r["top_fraction"]) for r in rows})
    lines = ["| set | rule | top | PRO@0.3 | AUROC-px | AUROC-img | good empty % | IoU % |", "|---|---|---|---|---|---|---|---|"]
    for key in keys:
        group = [r for r in rows if (r["set"], r["rule"], r["top_fraction"]) == key]

        def cell(get) -> str:
            v = [get(r) for r in group if get(r) is not None]
            return "–" if not v else f"{np.mean(v):.1f} ± {np.std(v):.1f}"

        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {cell(lambda r: r['pro'])} | {cell(lambda r: r['auroc_pixel'])} | "
                     f"{cell(lambda r: r['auroc_image'])} | {cell(lambda r: r['hysteresis']['empty_good'])} | {cell(lambda r: r['hysteresis']['iou'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

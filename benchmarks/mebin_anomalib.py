"""Our MEBin against anomalib 2.7's ``anomalib.post_processing.mebin.mebin_binarize`` on real anomaly maps.

    python benchmarks/mebin_anomalib.py --maps RUN/records/maps [RUN2/records/maps ...] [--timing_maps 2] [--threads 2]

For each set of maps (a run's ``records/maps`` or a stage-cache ``record`` folder): per-image thresholds and masks of
both, once with our default erosion (6×6 scaled to the map size) and once with anomalib's fixed 6×6 kernel, and the
seconds per map of each. anomalib labels components with kornia's iterative ``connected_components`` (1 000 max-pool
iterations per threshold, 64 thresholds per map, one map at a time), about a minute per 64×64 map on this CPU; so it
is timed as shipped on the first ``--timing_maps`` maps, its masks on those maps are checked against a copy whose
component count uses ``scipy.ndimage.label`` (8-connected, the same count), and that copy gives the masks of all maps.
Prints a Markdown table; seconds for 1 000 maps = 1 000 × seconds per map.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from anomaly_clustering.plugins.ncd.mebin import MEBin
from anomaly_clustering.records import AnomalyMaps
from anomaly_clustering.store import load_record

os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")  # benchmarks use local weights only, never a hub download


def ours(maps: np.ndarray, erosion_size: int | None) -> tuple[np.ndarray, np.ndarray, float]:
    rec = AnomalyMaps(maps, maps.reshape(len(maps), -1).max(1), np.full((len(maps), 2), maps.shape[1]))
    t0 = time.perf_counter()
    binz = MEBin(erosion_size=erosion_size).fit(rec)
    masks, thresholds, _ = binz.binarize(maps)
    return masks, thresholds, (time.perf_counter() - t0) / len(maps)


def _scipy_count(binary_mask: torch.Tensor, num_iterations: int = 1000) -> torch.Tensor:
    """anomalib's component count (foreground 8-connected components per image of B×1×H×W), by scipy."""
    eight = np.ones((3, 3), bool)
    return torch.tensor([ndimage.label(m[0].numpy() > 0.5, structure=eight)[1] for m in binary_mask.cpu()])


def theirs(maps: np.ndarray, kernel: int, timing_maps: int) -> tuple[np.ndarray, np.ndarray, float]:
    from anomalib.post_processing import mebin as anomalib_mebin

    x = torch.from_numpy(maps.copy()).unsqueeze(1)
    sub = x[:timing_maps]
    t0 = time.perf_counter()
    shipped_masks, shipped_t = anomalib_mebin.mebin_binarize(sub, kernel_size=kernel)  # as shipped (kornia)
    seconds = (time.perf_counter() - t0) / len(sub)
    shipped = anomalib_mebin._count_connected_components
    anomalib_mebin._count_connected_components = _scipy_count
    try:
        fast_masks, fast_t = anomalib_mebin.mebin_binarize(sub, kernel_size=kernel)
        if not (torch.equal(fast_masks, shipped_masks) and torch.allclose(fast_t, shipped_t)):
            raise SystemExit("the scipy component count does not reproduce anomalib's masks")
        masks, thresholds = anomalib_mebin.mebin_binarize(x, kernel_size=kernel)
    finally:
        anomalib_mebin._count_connected_components = shipped
    return masks[:, 0].numpy() > 0.5, thresholds.numpy(), seconds


def compare(name: str, maps: np.ndarray, kernel: int | None, timing_maps: int) -> str:
    m_ours, t_ours, s_ours = ours(maps, kernel)
    k_theirs = 6 if kernel is None else kernel
    m_theirs, t_theirs, s_theirs = theirs(maps, k_theirs, timing_maps)
    empty_ours, empty_theirs = ~m_ours.any((1, 2)), ~m_theirs.any((1, 2))
    t_ours = np.where(np.isnan(t_ours), np.nan, t_ours)
    both = ~empty_ours & ~empty_theirs
    same_t = np.isclose(t_ours[both], t_theirs[both], rtol=1e-4, atol=1e-6).mean() if both.any() else float("nan")
    inter = (m_ours & m_theirs).sum((1, 2))
    union = (m_ours | m_theirs).sum((1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    identical = np.mean([np.array_equal(a, b) for a, b in zip(m_ours, m_theirs)])
    kernel_text = f"ours {MEBin(erosion_size=kernel)._kernel(maps.shape[1])} / theirs {k_theirs}"
    return (f"| {name} | {len(maps)} | {maps.shape[1]}×{maps.shape[2]} | {kernel_text} | {identical:.2f} | {iou.mean():.3f} | "
            f"{same_t:.2f} | {empty_ours.sum()} / {empty_theirs.sum()} | {s_ours * 1000:.1f} | {s_theirs * 1000:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", nargs="+", required=True, help="record folders of AnomalyMaps (a run's records/maps)")
    ap.add_argument("--timing_maps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| maps | N | size | erosion kernel | identical masks | mean IoU | same threshold (both non-empty) | empty ours / theirs | ms per map ours | ms per map anomalib |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for folder in args.maps:
        maps = np.ascontiguousarray(load_record(Path(folder), AnomalyMaps).maps, dtype=np.float32)
        for kernel in (None, 6):
            print(compare(Path(folder).parts[-3] if Path(folder).name == "maps" else Path(folder).parent.name, maps, kernel, args.timing_maps), flush=True)


if __name__ == "__main__":
    main()

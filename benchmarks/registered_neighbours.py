"""Does a two-level board have a twin in its own set? A blind reference by registration (issue #19, DeepPCB).

    python benchmarks/registered_neighbours.py [--data DATA/deeppcb/test] [--subset 650] [--neighbours 1 3 5] [--out r.json]

DeepPCB's defects were drawn onto real boards, and what tells its types apart is what the defect does against what
the board should look like there (benchmarks/README.md, "2026-12-07, late night"). Without the templates, the
nearest thing a blind pipeline has is another image of the same set showing the same layout. Per image (binarised
at half range, pixel-identical copies excluded as partners): every other image scored by the best agreement of the
two over translations of up to ``--max_shift`` of the side (FFT cross-correlation, on a ``--screen``-px copy), the
``--candidates`` best re-registered at full resolution, and with the ``k`` best of those the pixels that disagree
with all ``k`` (a 3×3 opening removes the edges' misregistration) are the image's anomaly. Printed per ``k``: image
AUROC of the anomalous area, the share of good images left empty, the mean IoU with the ground-truth masks on the
defective images, and per type. Seed-free.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_paths import default_set  # noqa: E402

from anomaly_clustering.benchmarking import select_images  # noqa: E402
from anomaly_clustering.data import load_ground_truth  # noqa: E402


def _padded_fft(x: torch.Tensor, size: int) -> torch.Tensor:
    return torch.fft.rfft2(torch.nn.functional.pad(x, (0, size - x.shape[-1], 0, size - x.shape[-2])))


class Registrar:
    """Agreement of one ±1 image with many over every translation up to ``max_shift`` pixels (overlap-normalised)."""

    def __init__(self, images: torch.Tensor, max_shift: int):
        side = images.shape[-1]
        self.size, self.max_shift = 2 * side, max_shift
        self.spectra = _padded_fft(images, self.size)
        ones = _padded_fft(torch.ones(1, side, side), self.size)
        self.overlap = torch.fft.irfft2(ones * ones.conj(), s=(self.size, self.size))[0].round().clamp(min=1)
        shift = torch.arange(self.size)
        self.shift = torch.where(shift >= self.size // 2, shift - self.size, shift)
        self.allowed = (self.shift.abs()[:, None] <= max_shift) & (self.shift.abs()[None, :] <= max_shift)

    def best(self, i: int, others: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(best agreement, dy, dx) of image ``i`` against each of ``others``."""
        c = torch.fft.irfft2(self.spectra[i : i + 1] * self.spectra[others].conj(), s=(self.size, self.size))
        agree = (c / self.overlap + 1) / 2
        agree[:, ~self.allowed] = 0
        value, index = agree.flatten(1).max(1)
        return value, self.shift[index // self.size], self.shift[index % self.size]


def shifted(b: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``b`` moved by (dy, dx), NaN where it does not reach."""
    out = np.full(b.shape, np.nan, np.float32)
    h, w = b.shape
    out[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)] = b[max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
    return out


def anomaly_masks(binary: np.ndarray, neighbours: list[int], screen: int, candidates: int, max_shift: float) -> dict[int, np.ndarray]:
    """Per ``k``, N×H×W: the pixels that disagree with all of the image's ``k`` best-registered neighbours."""
    n, side = len(binary), binary.shape[-1]
    signed = torch.from_numpy(np.where(binary, 1.0, -1.0).astype(np.float32))
    small = torch.nn.functional.interpolate(signed[:, None], size=(screen, screen), mode="area")[:, 0].sign()
    coarse, fine = Registrar(small, int(round(max_shift * screen))), Registrar(signed, int(round(max_shift * side)))
    digest = [hash(b.tobytes()) for b in binary]
    out = {k: np.zeros(binary.shape, bool) for k in neighbours}
    everyone = torch.arange(n)
    for i in range(n):
        score = coarse.best(i, everyone)[0]
        score[[j for j in range(n) if digest[j] == digest[i]]] = -1.0  # itself and its pixel-identical copies
        cands = torch.topk(score, min(candidates, n - 1)).indices
        value, dy, dx = fine.best(i, cands)
        order = torch.argsort(value, descending=True)
        disagree = [np.where(np.isnan(r), np.nan, (r != binary[i]).astype(np.float32))
                    for r in (shifted(binary[int(cands[o])].astype(np.float32), int(dy[o]), int(dx[o])) for o in order[: max(neighbours)])]
        for k in neighbours:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a pixel no neighbour reaches: NaN, then no anomaly
                d = np.nan_to_num(np.nanmin(np.stack(disagree[:k]), 0), nan=0.0) > 0.5
            out[k][i] = ndimage.binary_opening(d, np.ones((3, 3)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=default_set("deeppcb"))
    ap.add_argument("--subset", type=int, default=650, help="class-stratified subset (subset seed 0), as the suite's")
    ap.add_argument("--neighbours", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--screen", type=int, default=64, help="side of the copies every pair is screened at")
    ap.add_argument("--candidates", type=int, default=20, help="neighbours re-registered at full resolution")
    ap.add_argument("--max_shift", type=float, default=0.3, help="largest translation, a share of the side")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the subset's pixel-identical copies are reported by the suite already
        images = select_images(args.data, args.subset, 0, False)
    gt = load_ground_truth(images)
    labels = np.array(gt.labels)
    grey = [np.asarray(Image.open(p).convert("L"), np.float32) / 255.0 for p in images.paths]
    if len({g.shape for g in grey}) != 1 or grey[0].shape[0] != grey[0].shape[1]:
        raise SystemExit("registered_neighbours: the images must be square and of one size (DeepPCB's 128 px crops)")
    binary = np.stack(grey) > 0.5
    truth = np.stack([np.asarray(Image.open(p).convert("L")) > 127 if p else np.zeros(binary.shape[1:], bool) for p in gt.mask_paths])
    t0 = time.perf_counter()
    masks = anomaly_masks(binary, sorted(set(args.neighbours)), args.screen, args.candidates, args.max_shift)
    seconds = time.perf_counter() - t0
    good, rows = labels == "good", {}
    print(f"{len(images)} images, {seconds:.0f} s\n\n| k | AUROC-img (area) | good empty | IoU, defective | IoU per type |\n|---|---|---|---|---|")
    for k, m in masks.items():
        area = m.reshape(len(m), -1).sum(1)
        iou = np.array([(m[i] & truth[i]).sum() / max((m[i] | truth[i]).sum(), 1) for i in range(len(m))])
        per_type = {str(t): round(float(iou[labels == t].mean()), 3) for t in sorted(set(labels)) if t != "good"}
        rows[k] = {"auroc_image": float(roc_auc_score(~good, area)), "good_empty": float(np.mean(area[good] == 0)),
                   "iou_defective": float(iou[~good].mean()), "iou_per_type": per_type}
        r = rows[k]
        print(f"| {k} | {100 * r['auroc_image']:.1f} | {100 * r['good_empty']:.1f} % | {100 * r['iou_defective']:.1f} | {per_type} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"n_images": len(images), "seconds": seconds, "options": {k: v for k, v in vars(args).items() if k not in ("data", "out")}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

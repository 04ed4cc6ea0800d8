"""Sets with a normal majority, built from the shared data by symbolic links (no pixel copied), for checking rules
that set the normal images aside first on sets other than MTD (issue #21).

    python benchmarks/make_normal_majority.py --out NM            # then:
    anomaly-cluster benchmark --suite benchmarks/suite-normal-majority.yaml --data_root NM --seeds 0,1,2

``bottle_mostly_good``: every MVTec bottle test image plus its 209 clean training images as more `good` (229 good of
292, 78 %: an object set where most images are defect-free). ``deeppcb_mostly_good``: DeepPCB's 499 good test images
and ``--per_type`` images of each of its six defect types drawn with ``--seed`` (62 % good before its pixel-identical
copies are merged). MVTec AD layout, masks linked from the source's ``ground_truth``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_paths import data_root  # noqa: E402  (benchmarks/ is the script folder)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    os.symlink(src.resolve(), dst)


def _link_ground_truth(source: Path, target: Path) -> None:
    if (source / "ground_truth").is_dir():
        _link(source / "ground_truth", target / "ground_truth")


def bottle_mostly_good(root: Path, out: Path) -> int:
    """Every bottle test image, plus the clean training images as `good` (named ``train_<name>``)."""
    src, dst = root / "mvtec_bottle", out / "bottle_mostly_good"
    n = 0
    for kind in sorted(p for p in (src / "test").iterdir() if p.is_dir()):
        for image in _images(kind):
            _link(image, dst / "test" / kind.name / image.name)
            n += 1
    for image in _images(src / "train" / "good"):
        _link(image, dst / "test" / "good" / f"train_{image.name}")
        n += 1
    _link_ground_truth(src, dst)
    return n


def deeppcb_mostly_good(root: Path, out: Path, per_type: int, seed: int) -> int:
    """DeepPCB's good test images and ``per_type`` images of each defect type."""
    src, dst = root / "deeppcb", out / "deeppcb_mostly_good"
    rng = random.Random(seed)
    n = 0
    for kind in sorted(p for p in (src / "test").iterdir() if p.is_dir()):
        images = _images(kind)
        chosen = images if kind.name == "good" else sorted(rng.sample(images, min(per_type, len(images))))
        for image in chosen:
            _link(image, dst / "test" / kind.name / image.name)
            n += 1
    _link_ground_truth(src, dst)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_root", default=None, help="the shared data folder (default: $ANOMALY_CLUSTERING_DATA, else ../shared/data)")
    ap.add_argument("--out", required=True, help="folder to write the linked sets into")
    ap.add_argument("--per_type", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = Path(args.data_root) if args.data_root else data_root()
    out = Path(args.out)
    print(f"bottle_mostly_good: {bottle_mostly_good(root, out)} images")
    print(f"deeppcb_mostly_good: {deeppcb_mostly_good(root, out, args.per_type, args.seed)} images")


if __name__ == "__main__":
    main()

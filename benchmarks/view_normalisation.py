"""How each view is normalised before the default's views are concatenated, on the saved views (issue #21).

    python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2,3,4,5 --save_blocks BLOCKS [--tag TAG ...]
    python benchmarks/view_normalisation.py --blocks BLOCKS [--tags "" _ens3] [--suite ... --data_root ...] [--out rows.json]

Every view (eq. 2, mean-pooled, context, crop) reaches the default clusterer centred and scaled to unit mean norm
over the set. Rows, each the default's clusterer (``multiview-all-normal-first``'s, at the saved K) on the views as
saved and then, every view alike, one of the transforms of ``multiview``'s ``view_transform``:

- ``none``: the views as saved (the former default);
- ``l2``: every image's view to unit length (its direction only);
- ``l2, crop as saved``: the same for the whole-image views, the crop unchanged;
- ``ssqrt``: the signed square root (damps a few dominant channels);
- ``ssqrt-l2``: the signed square root, then unit length (Perronnin et al. 2010's power + L2 normalisation).

Each transformed view is centred and scaled to unit mean norm again, as :func:`apply_view_transform` does; the saved
views are that function's ``none`` output, so ``ssqrt-l2`` here is exactly what ``view_transform="ssqrt-l2"``
computes in a run (a positive scale does not change a row's direction).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_backbone import default_nmi  # noqa: E402
from view_harness import run_saved_views, saved_blocks, saved_views_parser, standardise  # noqa: E402

TRANSFORMS = ("l2", "l2, crop as saved", "ssqrt", "ssqrt-l2")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def transformed(block: np.ndarray, how: str) -> np.ndarray:
    """One saved (standardised) view through ``how``, standardised again."""
    x = np.asarray(block, np.float64)
    if how.startswith("ssqrt"):
        x = np.sign(x) * np.sqrt(np.abs(x))
    if how.endswith("l2"):
        x = _unit(x)
    return standardise(x).astype(np.float32)


def transformed_views(blocks: dict[str, np.ndarray], how: str) -> dict[str, np.ndarray]:
    """Every view through ``how`` (with ``l2, crop as saved`` the crop view is left as saved)."""
    if how == "l2, crop as saved":
        return {name: b if name == "crop224" else transformed(b, "l2") for name, b in blocks.items()}
    return {name: transformed(b, how) for name, b in blocks.items()}


def main() -> None:
    ap = saved_views_parser()
    ap.add_argument("--tags", nargs="*", default=[""], help="saved-view tags to run (\"\" = the files without a tag)")
    args = ap.parse_args()

    def row_of(images, path, saved) -> dict[str, float]:
        blocks = saved_blocks(saved)
        row = {"none": default_nmi(blocks, saved)}
        for how in TRANSFORMS:
            row[how] = default_nmi(transformed_views(blocks, how), saved)
        return row

    out = args.out
    for tag in args.tags:
        if out:
            args.out = str(Path(out).with_suffix("")) + (tag or "") + ".json"
        print(f"== views {args.localizer}{tag}", flush=True)
        run_saved_views(args, row_of, width=20, tag=tag)


if __name__ == "__main__":
    main()

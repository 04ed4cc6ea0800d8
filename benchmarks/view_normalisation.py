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

Each saved view goes through ``multiview``'s own transform (:func:`fit_view_transform` / :func:`apply_view_transform`).
The saved views are that function's ``none`` output (centred, scaled by a positive number), so the result is what
``view_transform=HOW`` computes from the raw views in a run (``tests/test_view_normalisation.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_backbone import default_nmi  # noqa: E402
from view_harness import run_saved_views, saved_blocks, saved_views_parser  # noqa: E402

TRANSFORMS = ("l2", "l2, crop as saved", "ssqrt", "ssqrt-l2")


def transformed(block: np.ndarray, how: str) -> np.ndarray:
    """One saved (centred, scaled) view through ``multiview``'s own ``how`` transform, centred and scaled again."""
    from anomaly_clustering.plugins.multiview.representation import apply_view_transform, fit_view_transform

    return apply_view_transform(block, fit_view_transform(block, how)).astype(np.float32)


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

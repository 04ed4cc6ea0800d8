"""Which localizer options the default should use: the default clusterer on views saved from other maps.

    python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks BLOCKS
    python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks BLOCKS \
        --fit_options "--localizer.vae_ensemble 3" --tag _ens3
    python benchmarks/map_variants.py --blocks BLOCKS --tags _ens3 [--out variants.json]

Unlike ``view_backbone.py`` (same maps, other descriptions), every tag here has its own maps, hence its own
regions, crops, gates and image scores: each file is read whole, and the default (``multiview-all-normal-first``'s
clusterer, at the saved K) is run on it. The floor is the untagged file's (Sohn's Average does not use the maps).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_backbone import default_nmi, run_tagged  # noqa: E402
from view_harness import saved_blocks, seed_of  # noqa: E402


def variant_row(path: Path, localizer: str, tags: list[str]) -> dict[str, float]:
    """One saved set × seed: the default's NMI on the untagged views and on each tag's own views (absent tags skipped)."""
    base = np.load(path)
    row = {"seed": seed_of(path), "floor": float(base["floor"]), "default maps": default_nmi(saved_blocks(base), base)}
    for tag in tags:
        other_file = path.with_name(path.name.replace(f"_{localizer}_seed", f"_{localizer}{tag}_seed"))
        if other_file.exists():
            other = np.load(other_file)
            row[f"maps{tag}"] = default_nmi(saved_blocks(other), other)
    return row


def main() -> None:
    run_tagged(variant_row, "the --tag of each variant's saved views, e.g. _ens3", 20)


if __name__ == "__main__":
    main()

"""The default classifier on two localizers' maps, seed by seed: does a localizer that draws better maps cluster as well?

    python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2,3,4,5 --save_blocks BLOCKS
    python benchmarks/classifier_ablation.py --localizer fca-vae-frame --seeds 0,1,2,3,4,5 --save_blocks BLOCKS
    python benchmarks/localizer_views.py --blocks BLOCKS --localizers fca-vae fca-vae-frame [--out rows.json]

Per suite set and seed saved for every localizer named: NMI and g of the default's clusterer
(``multiview-all-normal-first``'s, true K) on each localizer's views, and how much of the per-image verdict the two
share (the share of images whose "has a region" is the same; the crop view and the normal group follow it), so a
difference in NMI can be told from a difference in which images were flagged; with two localizers, also the first's
views with one view (eq. 2, the crop) taken from the second's maps (which view a difference comes from).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_backbone import default_labels  # noqa: E402
from view_harness import region_info, saved_blocks, saved_views_parser  # noqa: E402


def seed_rows(blocks: Path, set_name: str, localizers: list[str]) -> list[dict]:
    """One row per seed saved for every localizer: each localizer's default NMI, the floor, the verdicts' agreement."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    seeds = [{int(p.stem.rsplit("_seed", 1)[1]) for p in blocks.glob(f"{set_name}_{loc}_seed*.npz")} for loc in localizers]
    rows = []
    for seed in sorted(set.intersection(*seeds)):
        saved = [np.load(blocks / f"{set_name}_{loc}_seed{seed}.npz") for loc in localizers]
        if any(not np.array_equal(s["true"], saved[0]["true"]) for s in saved):
            raise SystemExit(f"{set_name} seed {seed}: the localizers' saved views are not of the same images")
        verdicts = [region_info(s)[0] for s in saved]
        row = {"seed": seed, "floor": float(saved[0]["floor"]),
               **{loc: float(nmi(s["true"], default_labels(saved_blocks(s), s))) for loc, s in zip(localizers, saved)},
               **(swapped_views(saved[0], saved[1], localizers[1]) if len(saved) == 2 else {}),
               "verdict_agreement": float(np.mean(verdicts[0] == verdicts[-1])),
               "flagged": [int(v.sum()) for v in verdicts]}
        print(f"{set_name:13s} seed {seed}: " + ", ".join(f"{loc} {row[loc]:.3f}" for loc in localizers)
              + f"  (floor {row['floor']:.3f}; verdicts agree on {100 * row['verdict_agreement']:.1f} %, flagged {row['flagged']})", flush=True)
        rows.append(row)
    return rows


def swapped_views(first, second, name: str) -> dict[str, float]:
    """The default's NMI on ``first``'s views with its eq. 2 view, then its crop view, taken from ``second``."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    out = {}
    for view in ("eq2", "crop224"):
        blocks = {**saved_blocks(first), view: saved_blocks(second)[view]}
        out[f"{view} from {name}"] = float(nmi(first["true"], default_labels(blocks, first)))
    return out


def summary(set_name: str, rows: list[dict], localizers: list[str]) -> None:
    """Per localizer: NMI mean ± std, g mean and worst seed over the set's seeds."""
    from anomaly_clustering.benchmarking import gap_closed

    for loc in [n for n in rows[0] if n not in ("seed", "floor", "verdict_agreement", "flagged")]:
        v = np.array([r[loc] for r in rows])
        g = np.array([gap_closed(x, r["floor"]) for x, r in zip(v, rows)])
        print(f"  {set_name:<13} {loc:<28} {len(rows)} seeds  NMI {v.mean():.3f} ± {v.std():.3f}   g {g.mean():+.3f} (worst {g.min():+.3f})", flush=True)


def main() -> None:
    ap = saved_views_parser()
    ap.add_argument("--localizers", nargs="+", default=["fca-vae", "fca-vae-frame"])
    args = ap.parse_args()
    from anomaly_clustering.benchmarking import load_suite

    results = {}
    for s in load_suite(args.suite, args.data_root):
        if args.sets and s.name not in args.sets:
            continue
        rows = seed_rows(Path(args.blocks), s.name, args.localizers)
        if rows:
            summary(s.name, rows, args.localizers)
            results[s.name] = rows
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Which backbone the default's views should come from: the default clusterer on views saved with another backbone.

    python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks BLOCKS
    python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks BLOCKS \
        --view_backbone tf_efficientnet_lite2 --tag _lite2
    python benchmarks/view_backbone.py --blocks BLOCKS --tags _lite2 [--out backbone.json]

The same anomaly maps (hence the same regions and crops) and the same floor (Sohn's Average on the default
backbone); only the backbone that describes each view changes. Rows: the default (``multiview-all-normal-first``)
on the default backbone's views, Sohn's Average floor on the other backbone (its mean-pooled view + Ward: does the
backbone alone explain a gain?), the default on the other backbone's views, on both backbones' views side by side (each view's two halves
scaled by 1/sqrt 2, so every view keeps its weight), and with one view at a time taken from
the other backbone (which view gains); with two other backbones or more, the co-association consensus of the
default's labelings on every backbone's views.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from normal_first_rule import descriptor  # noqa: E402  (`multiview-all`'s vectors from the saved views)
from view_harness import print_summary, region_info, saved_blocks, saved_view_sets, saved_views_parser, seed_of, ward  # noqa: E402

VIEWS = ("eq2", "avg512", "ctx384", "crop224")


def default_fit(blocks: dict[str, np.ndarray], saved, has_region: np.ndarray | None = None, transform=None, **options):
    """(the fitted clusterer, its embeddings, its Clustering): the default classifier's own clusterer (its preset's
    options, overridden by ``options``, at the saved K) on these views; ``has_region`` replaces the saved verdict,
    ``transform`` maps the descriptor first."""
    from anomaly_clustering import config, registry
    from anomaly_clustering.records import Embeddings

    saved_region, info = region_info(saved)
    has_region = saved_region if has_region is None else np.asarray(has_region, bool)
    info = {**info, "has_region": has_region.tolist()}
    x = descriptor(blocks, has_region)
    emb = Embeddings.per_image(np.asarray(x if transform is None else transform(x), np.float32), info)
    preset = config.preset_parts(config.DEFAULT_CLASSIFIER)["clusterer"]
    c = registry.create("clusterer", preset.pop("name"), **{**preset, **options}, n_clusters=int(saved["k"]))
    return c, emb, c.fit_predict(emb)


def default_labels(blocks: dict[str, np.ndarray], saved, has_region: np.ndarray | None = None, transform=None, **options) -> np.ndarray:
    """The labels of :func:`default_fit`."""
    return np.asarray(default_fit(blocks, saved, has_region, transform, **options)[2].labels)


def default_nmi(blocks: dict[str, np.ndarray], saved) -> float:
    """NMI of the default clusterer's labels on these views against the saved true types."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    return float(nmi(saved["true"], default_labels(blocks, saved)))


def consensus(labelings: list[np.ndarray], k: int) -> np.ndarray:
    """K clusters of the co-association of several labelings (the share of labelings that put two images together),
    average linkage."""
    from sklearn.cluster import AgglomerativeClustering

    co = np.mean([lab[:, None] == lab[None, :] for lab in labelings], axis=0)
    return AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average").fit_predict(1.0 - co)


def backbone_row(path: Path, localizer: str, tags: list[str]) -> dict[str, float]:
    """One saved set × seed: the default's NMI on the default backbone's views and on each other backbone's
    (every view, both side by side, one view at a time), that backbone's Average floor, and the consensus."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    base = np.load(path)
    true, k, ref = base["true"], int(base["k"]), saved_blocks(base)
    labelings = [default_labels(ref, base)]
    row = {"seed": seed_of(path), "floor": float(base["floor"]), "default backbone": float(nmi(true, labelings[0]))}
    for tag in tags:
        other_file = path.with_name(path.name.replace(f"_{localizer}_seed", f"_{localizer}{tag}_seed"))
        if not other_file.exists():
            continue
        other = saved_blocks(np.load(other_file))
        row[f"Average floor{tag}"] = float(nmi(true, ward(other["avg512"], k)))
        labelings.append(default_labels(other, base))
        row[f"all views{tag}"] = float(nmi(true, labelings[-1]))
        row[f"both backbones{tag}"] = default_nmi({v: np.concatenate([ref[v], other[v]], 1) / np.sqrt(2) for v in VIEWS}, base)
        for v in VIEWS:
            row[f"{v}{tag} only"] = default_nmi({**ref, v: other[v]}, base)
    if len(labelings) > 2:
        row["consensus of backbones"] = float(nmi(true, consensus(labelings, k)))
    return row


def run_tagged(row_of, tag_help: str, width: int = 26) -> None:
    """The loop of the tagged harnesses: ``row_of(path, localizer, tags)`` per saved set × seed, each row printed,
    each set summarised, all written to ``--out``."""
    ap = saved_views_parser()
    ap.add_argument("--tags", nargs="+", required=True, help=tag_help)
    args = ap.parse_args()
    results = {}
    for s, _images, files in saved_view_sets(args):
        rows = [row_of(f, args.localizer, args.tags) for f in files]
        for f, row in zip(files, rows):
            print(f"{f.stem}: " + ", ".join(f"{n} {v:.3f}" for n, v in row.items() if n != "seed"), flush=True)
        results[s.name] = rows
        print_summary(s.name, rows, width)
    if args.out:
        import json

        Path(args.out).write_text(json.dumps(results, indent=1))


def main() -> None:
    run_tagged(backbone_row, "the --tag of each other backbone's saved views, e.g. _lite2")


if __name__ == "__main__":
    main()

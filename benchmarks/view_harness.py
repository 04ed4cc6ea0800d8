"""What the view-ablation scripts share: the suite options, one view's standardisation (the ``multiview`` plugin's own,
so a variant here is the representation the preset computes) and Ward at a given K."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

#: Benchmarks never download: weights come from installed packages or local files (a missing file is an error).
os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")


def add_suite_arguments(ap: argparse.ArgumentParser, localizer: str) -> None:
    """The options every suite harness takes: the suite file, its data root, which sets, the localizer, the seeds."""
    ap.add_argument("--suite", default="benchmarks/suite.yaml")
    ap.add_argument("--data_root", default=None)
    ap.add_argument("--sets", nargs="*", default=None)
    ap.add_argument("--localizer", default=localizer)
    ap.add_argument("--seeds", default="0,1,2")


def saved_views_parser(localizer: str = "fca-vae") -> argparse.ArgumentParser:
    """The options of a harness over the views ``classifier_ablation.py --save_blocks`` saved: the suite's, the
    views' folder (``--blocks``) and a JSON output (``--out``)."""
    ap = argparse.ArgumentParser()
    add_suite_arguments(ap, localizer=localizer)
    ap.add_argument("--blocks", required=True, help="the --save_blocks folder of classifier_ablation.py")
    ap.add_argument("--out", default=None)
    return ap


def labelled_suite_sets(args: argparse.Namespace):
    """Per suite set chosen by ``args``: (suite set, its images, their ground truth, true label ids, the good
    images' mask — all False where the set has no good type)."""
    from anomaly_clustering.benchmarking import load_suite, select_images
    from anomaly_clustering.data import load_ground_truth

    for s in load_suite(args.suite, args.data_root):
        if args.sets and s.name not in args.sets:
            continue
        images = select_images(s.data, s.subset, s.subset_seed, s.exclude_good)
        gt = load_ground_truth(images)
        true, names = gt.label_ids()
        normal = np.asarray(true) == list(names).index("good") if "good" in names else np.zeros(len(true), bool)
        yield s, images, gt, np.asarray(true), normal


def fitted_on_suite(args: argparse.Namespace):
    """Per suite set chosen by ``args`` and seed of ``args.seeds``: (suite set, seed, its images, their ground truth,
    the good images' mask, ``args.localizer`` fitted with the floor's classifier through the stage cache)."""
    from classifier_ablation import _fit  # lazily: classifier_ablation imports this module

    for s, images, gt, true, normal in labelled_suite_sets(args):
        for seed in (int(v) for v in args.seeds.split(",")):
            yield s, seed, images, gt, normal, _fit(images, args.localizer, "average", seed, len(set(true.tolist())), [])


def grid_masks(gt, n: int, shape: tuple[int, ...]) -> np.ndarray | None:
    """The ``n`` images' ground-truth masks at ``shape`` (N×h×w bool), None where the set has no masks."""
    return np.stack([gt.load_mask(i, shape) for i in range(n)]) if gt.has_masks else None


def localization_row(set_name: str, seed: int, name: str, maps: np.ndarray, scores: np.ndarray, masks, anomalous: np.ndarray,
                     key: str = "variant", width: int = 36, suffix: str = "", **extra) -> dict:
    """PRO@0.3, pixel and image AUROC of one variant's maps and image scores, printed as one line; the JSON row."""
    from anomaly_clustering.metrics import localization_scores

    r = localization_scores(maps, scores, masks, anomalous)
    fmt = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    print(f"{set_name:13s} seed {seed} {name:{width}s} PRO {fmt(r.pro_30):>5} AUROC-px {fmt(r.auroc_pixel):>5} "
          f"AUROC-img {fmt(r.auroc_image):>5}{suffix}", flush=True)
    return {"set": set_name, "seed": seed, key: name, "pro_30": r.pro_30, "auroc_pixel": r.auroc_pixel, "auroc_image": r.auroc_image, **extra}


def saved_view_sets(args: argparse.Namespace, tag: str = ""):
    """Per suite set chosen by ``args`` with saved views: (suite set, its images, the views' files, one per seed)."""
    from anomaly_clustering.benchmarking import load_suite, select_images

    for s in load_suite(args.suite, args.data_root):
        files = sorted(Path(args.blocks).glob(f"{s.name}_{args.localizer}{tag}_seed*.npz"))
        if (args.sets and s.name not in args.sets) or not files:
            continue
        yield s, select_images(s.data, s.subset, s.subset_seed, s.exclude_good), files


def standardise(block: np.ndarray) -> np.ndarray:
    """One view centred and scaled to unit mean norm over the set (``multiview``'s ``view_transform="none"``)."""
    from anomaly_clustering.plugins.multiview.representation import (
        apply_view_transform,
        fit_view_transform,
    )

    return apply_view_transform(block, fit_view_transform(block))


def ward(x: np.ndarray, k: int) -> np.ndarray:
    """Ward's K clusters of the rows of ``x`` (both papers' clusterer)."""
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)


def seed_of(path) -> int:
    """The seed in a saved views' file name (``{set}_{localizer}{tag}_seed{seed}.npz``)."""
    return int(Path(path).stem.rsplit("_seed", 1)[1])


def region_info(saved) -> tuple[np.ndarray, dict]:
    """(per image, whether the binarizer gave it a region; the embedding info the ``normal-first`` clusterer reads)."""
    has_region = saved["gate_mask"] > 0
    return has_region, {"has_region": has_region.tolist(), "image_scores": np.asarray(saved["scores"], np.float64).tolist()}


def normal_first_nmi(x: np.ndarray, saved) -> float:
    """NMI against the saved labels of the default's clusterer (``normal-first``, ``normal_by="region"``) on ``x``."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from anomaly_clustering.plugins.multiview.clusterers import NormalFirstClusterer
    from anomaly_clustering.records import Embeddings

    _, info = region_info(saved)
    res = NormalFirstClusterer(n_clusters=int(saved["k"]), normal_by="region").fit_predict(Embeddings.per_image(np.asarray(x, np.float32), info))
    return float(nmi(saved["true"], res.labels))


def print_summary(set_name: str, rows: list[dict], width: int = 22) -> None:
    """Per variant of one set's rows (NMI per seed, with ``floor``): mean ± std NMI, mean g and the worst seed's g."""
    from anomaly_clustering.benchmarking import gap_closed

    for name in [n for n in rows[0] if n not in ("seed", "floor")]:
        v = [r[name] for r in rows]
        g = [gap_closed(x, r["floor"]) for x, r in zip(v, rows)]
        print(f"  {set_name:<13} {name:<{width}} NMI {np.mean(v):.3f} ± {np.std(v):.3f}   g {np.mean(g):+.3f} (worst {min(g):+.3f})", flush=True)


def saved_blocks(saved) -> dict[str, np.ndarray]:
    """The standardised views of one saved file, by name (``eq2``, ``avg512``, ``ctx384``, ``crop224``)."""
    return {n[6:]: saved[n] for n in saved.files if n.startswith("block_")}


def fitted_maps(images, localizer: str, path, saved):
    """The anomaly maps the saved views were built on: the same fit configuration, read from the stage cache."""
    from classifier_ablation import _fit  # benchmarks/ is the script folder

    return _fit(images, localizer, "average", seed_of(path), int(saved["k"]), []).maps


def run_saved_views(args, row_of, width: int = 22, tag: str = "") -> dict[str, list]:
    """The harnesses' one loop: for every chosen set and saved seed, ``row_of(images, path, saved)`` gives the
    variants' NMI; each row is printed, each set summarised (:func:`print_summary`), all written to ``args.out``."""
    import json

    results: dict[str, list] = {}
    for s, images, files in saved_view_sets(args, tag):
        rows = []
        for f in files:
            d = np.load(f)
            row = {"seed": seed_of(f), "floor": float(d["floor"]), **row_of(images, f, d)}
            rows.append(row)
            print(f"{f.stem}: " + ", ".join(f"{n} {v:.3f}" for n, v in row.items() if n != "seed"), flush=True)
        results[s.name] = rows
        print_summary(s.name, rows, width)
    if getattr(args, "out", None):
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results

"""Refit and open-set figures on a labelled set (MVTec layout), through the commands a user runs.

    ANOMALY_CLUSTERING_CACHE=<cache dir> python benchmarks/labelling_quality.py --sets neu_det mtd --per_type 40 \\
        --localizer color-stats --classifier average --input_size 224 --seeds 0 1 2 --work <work dir>

Per set: a stratified subset (``--per_type`` images of each type, seed 0; symlinks in ``--work``).

Refit: ``fit`` with K = number of types (one fit), then per seed a simulated reviewer looks at ``--review`` images
of each type (drawn with that seed): each type names the cluster holding most of its reviewed images (greedy, one
cluster per type; a type left without one gets a new cluster), and every reviewed image is listed under ``move`` with its
type's cluster (moved when elsewhere, confirmed when already there) in one edit file (``relabel``). Then ``refit --base named`` and, each after ``relabel --undo``, ``refit --base reviewed`` with
the logistic head (with ``--n_novel`` left to its default, and ``--n_novel 0``: the reviewer has seen every type,
so none is left to discover) and with ``--head seeded-kmeans``. NMI is
reported on all images and on the images nobody reviewed; the floor is Sohn et al.'s Average on the same images.

Open set: for each held-back type (``--holdout``, default every type but ``good``, or the first ``--holdout_first``), ``fit`` on 70 % of each other
type's images (K = their number), ``predict`` the other 30 % plus every image of the held-back type; the share of
the held-back type flagged ``unknown`` and of known images wrongly flagged, at several ``--reject`` quantiles (the
radii scale with the quantile, so one ``predict`` gives them all).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import yaml

os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")  # benchmarks use local weights only, never a hub download

from anomaly_clustering.cli import main as cli  # noqa: E402
from anomaly_clustering.labelling import RunLabels  # noqa: E402
from anomaly_clustering.metrics import clustering_scores  # noqa: E402
from anomaly_clustering.openset import OpenSetAssigner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUANTILES = (0.9, 0.95, 0.99, 1.0)


def data_root(arg: str | None) -> Path:
    return Path(arg or os.environ.get("ANOMALY_CLUSTERING_DATA") or REPO.parent / "shared" / "data")


def subset(src: Path, dst: Path, per_type: int, seed: int = 0) -> dict[str, list[str]]:
    """Symlink ``per_type`` images of each type of ``src`` (a test folder) into ``dst``; type → names."""
    rng = random.Random(seed)
    out = {}
    for t in sorted(p.name for p in src.iterdir() if p.is_dir()):
        files = sorted(p.name for p in (src / t).iterdir())
        pick = sorted(rng.sample(files, min(per_type, len(files))))
        (dst / t).mkdir(parents=True, exist_ok=True)
        for f in pick:
            if not (dst / t / f).exists():
                os.symlink(src / t / f, dst / t / f)
        out[t] = [f"{t}/{f}" for f in pick]
    return out


def fit(data: Path, run: Path, k: int, args, classifier: str | None = None, localizer: str | None = None, extra: list[str] = ()) -> None:
    if (run / "clusters.csv").exists():
        return
    argv = ["fit", "--data", str(data), "--localizer", localizer or args.localizer, "--classifier", classifier or args.classifier,
            "--n_clusters", str(k), "--run", str(run), "--cache_dir", str(args.work / "stage"), "--quiet", "true", "--save_pngs", "false", *extra]
    if args.input_size:
        argv += ["--input_size", str(args.input_size)]
    assert cli(argv) == 0, argv


def truth_of(names: list[str]) -> np.ndarray:
    kinds = [n.split("/")[0] for n in names]
    classes = sorted(set(kinds))
    return np.array([classes.index(c) for c in kinds])


def nmi(run: Path, mask: np.ndarray | None = None) -> float:
    labels = RunLabels(run)
    y, p = truth_of(labels.image_names()), labels.state().labels
    if mask is not None:
        y, p = y[mask], p[mask]
    return clustering_scores(y, p).nmi


def reviewer_edits(run: Path, review: int, seed: int) -> tuple[dict, np.ndarray]:
    """The simulated reviewer's edit file and the mask of reviewed images."""
    labels = RunLabels(run)
    names = labels.image_names()
    state = labels.state()
    rng = np.random.default_rng(seed)
    kinds = np.array([n.split("/")[0] for n in names])
    reviewed = np.zeros(len(names), bool)
    for t in sorted(set(kinds.tolist())):
        idx = np.flatnonzero(kinds == t)
        reviewed[rng.choice(idx, min(review, len(idx)), replace=False)] = True
    counts = [(int(((kinds == t) & reviewed & (state.labels == k)).sum()), t, k) for t in sorted(set(kinds.tolist())) for k in state.clusters]
    cluster_of: dict[str, int] = {}
    taken: set[int] = set()
    for c, t, k in sorted(counts, key=lambda x: (-x[0], x[1], x[2])):
        if c > 0 and t not in cluster_of and k not in taken:
            cluster_of[t] = k
            taken.add(k)
    fresh = max(state.clusters) + 1
    for t in sorted(set(kinds.tolist()) - set(cluster_of)):
        cluster_of[t] = fresh
        fresh += 1
    move = {names[i]: int(cluster_of[str(kinds[i])]) for i in np.flatnonzero(reviewed)}  # those already there: confirmed
    return {"names": {k: t for t, k in cluster_of.items()}, "move": move}, reviewed


def refit_study(name: str, data: Path, k: int, args, out: dict) -> None:
    base_run = args.work / name / "run"
    fit(data, base_run, k, args)
    floor_run = args.work / name / "floor"
    fit(data, floor_run, k, args, classifier="average", localizer="color-stats")
    floor = nmi(floor_run)
    rows = []
    for seed in args.seeds:
        run = args.work / name / f"review{seed}"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base_run, run, ignore=shutil.ignore_patterns("cache", "report", "edits", "labels.csv", "predictions"))
        edits, reviewed = reviewer_edits(run, args.review, seed)
        path = args.work / name / f"edits{seed}.yaml"
        path.write_text(yaml.safe_dump(edits))
        row = {"seed": seed, "before": (nmi(run), nmi(run, ~reviewed))}
        assert cli(["relabel", "--run", str(run), "--edits", str(path)]) == 0
        row["edited"] = (nmi(run), nmi(run, ~reviewed))
        assert cli(["refit", "--run", str(run), "--base", "named"]) == 0
        row["refit_named"] = (nmi(run), nmi(run, ~reviewed))
        assert cli(["relabel", "--run", str(run), "--undo"]) == 0
        assert cli(["refit", "--run", str(run), "--base", "reviewed"]) == 0
        row["refit_reviewed"] = (nmi(run), nmi(run, ~reviewed))
        assert cli(["relabel", "--run", str(run), "--undo"]) == 0
        assert cli(["refit", "--run", str(run), "--base", "reviewed", "--n_novel", "0"]) == 0
        row["refit_reviewed_no_novel"] = (nmi(run), nmi(run, ~reviewed))
        assert cli(["relabel", "--run", str(run), "--undo"]) == 0
        assert cli(["refit", "--run", str(run), "--base", "reviewed", "--head", "seeded-kmeans"]) == 0
        row["refit_reviewed_kmeans"] = (nmi(run), nmi(run, ~reviewed))
        rows.append(row)
        print(name, row, flush=True)
    out[name]["refit"] = {"floor": floor, "rows": rows}


def split_known(types: dict[str, list[str]], held: str, seed: int = 0) -> tuple[list[str], list[str]]:
    """(fit images, held-back images of the known types), 70/30 per known type."""
    rng = random.Random(seed)
    fit_part, back = [], []
    for t, names in types.items():
        if t == held:
            continue
        names = sorted(names)
        rng.shuffle(names)
        cut = int(round(0.7 * len(names)))
        fit_part += names[:cut]
        back += names[cut:]
    return fit_part, back


def link_set(src: Path, dst: Path, names: list[str]) -> None:
    for n in names:
        (dst / n).parent.mkdir(parents=True, exist_ok=True)
        if not (dst / n).exists():
            os.symlink((src / n).resolve(), dst / n)


def openset_study(name: str, data: Path, types: dict[str, list[str]], args, out: dict) -> None:
    held_types = args.holdout or [t for t in sorted(types) if t != "good"][: args.holdout_first or None]
    rows = []
    for held in held_types:
        fit_names, back = split_known(types, held)
        root = args.work / name / f"open-{held}"
        link_set(data, root / "fit" / "test", fit_names)
        link_set(data, root / "new" / "test", back + types[held])
        run = root / "run"
        fit(root / "fit" / "test", run, len(types) - 1, args)
        assert cli(["predict", "--run", str(run), "--data", str(root / "new" / "test"), "--quiet", "true", "--save_pngs", "false"]) == 0
        pred = list(csv.DictReader(open(run / "predictions" / "predictions.csv")))
        labels = RunLabels(run)
        vectors = labels.vectors()
        state = labels.state()
        is_held = np.array([r["image"].split("/")[0] == held for r in pred])
        dist = np.array([float(r["distance"]) for r in pred])
        limit = np.array([float(r["limit"]) for r in pred])
        base = OpenSetAssigner(0.99).fit(vectors, state)
        row = {"held": held, "n_held": int(is_held.sum()), "n_known": int((~is_held).sum())}
        for q in QUANTILES:
            radius = OpenSetAssigner(q).fit(vectors, state).radius_
            factor = float(np.median(radius / base.radius_))  # radii scale by one factor across clusters
            flagged = dist > limit * factor
            row[str(q)] = (float(flagged[is_held].mean()), float(flagged[~is_held].mean()))
        rows.append(row)
        print(name, row, flush=True)
    out[name]["openset"] = rows


def markdown(out: dict) -> str:
    """The result tables in the form benchmarks/README.md shows them (means ± standard deviation over seeds)."""
    lines = []
    for name, res in out.items():
        if "refit" in res:
            floor = res["refit"]["floor"]
            rows = res["refit"]["rows"]
            lines += [f"\n{name} ({res['images']} images), floor NMI {floor:.3f}", "| step | NMI all | NMI unreviewed | g (all) |", "|---|---|---|---|"]
            for key in [k for k in rows[0] if k != "seed"]:
                a = np.array([r[key][0] for r in rows])
                u = np.array([r[key][1] for r in rows])
                g = (a - floor) / (1 - floor)
                lines.append(f"| {key} | {a.mean():.3f} ± {a.std():.3f} | {u.mean():.3f} ± {u.std():.3f} | {g.mean():+.3f} |")
        if "openset" in res:
            lines += [f"\n{name} open set: share flagged unknown (held-back type / known held-back images)", "| held back | " + " | ".join(f"q = {q}" for q in QUANTILES) + " |", "|---" * (len(QUANTILES) + 1) + "|"]
            for r in res["openset"]:
                lines.append(f"| {r['held']} ({r['n_held']} / {r['n_known']}) | " + " | ".join(f"{r[str(q)][0]:.2f} / {r[str(q)][1]:.2f}" for q in QUANTILES) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_root", default=None, help="folder holding the sets (default: ANOMALY_CLUSTERING_DATA or ../shared/data)")
    ap.add_argument("--sets", nargs="+", default=["neu_det", "mtd"])
    ap.add_argument("--per_type", type=int, default=40)
    ap.add_argument("--review", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--localizer", default="color-stats")
    ap.add_argument("--classifier", default="average")
    ap.add_argument("--input_size", type=int, default=224)
    ap.add_argument("--holdout", nargs="*", default=None, help="held-back types (default: every type but good)")
    ap.add_argument("--holdout_first", type=int, default=0, help="only the first N types (alphabetical, good excluded) when --holdout is not given")
    ap.add_argument("--skip", nargs="*", default=[], help="refit and/or openset")
    ap.add_argument("--work", type=Path, default=Path("labelling-bench"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    out: dict = {}
    for name in args.sets:
        src = data_root(args.data_root) / name / "test"
        data = args.work / name / "subset" / "test"
        types = subset(src, data, args.per_type)
        out[name] = {"images": sum(map(len, types.values())), "types": {t: len(v) for t, v in types.items()}}
        if "refit" not in args.skip:
            refit_study(name, data, len(types), args, out)
        if "openset" not in args.skip:
            openset_study(name, data, types, args, out)
    print(json.dumps(out, indent=1))
    print(markdown(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""``anomaly-cluster benchmark``: every localizer × every classifier on labelled sets, in one table.

Each combination runs in its own process (so its peak memory is its own) through the cached pipeline; all runs share
one stage cache, so features and maps are computed once per localizer and set, not once per classifier. Finished
combinations are kept in ``results.jsonl``: an interrupted benchmark resumes where it stopped. The table prints
beside every result Sohn et al.'s Average on the same images (the floor) and the papers' figures for the same set and
protocol (``configs/anchors.yaml``) with the difference.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

__all__ = ["benchmark_main", "select_images", "run_combination", "format_table"]

FLOOR = "average"


def _anchors() -> dict[str, Any]:
    from importlib import resources

    try:
        return yaml.safe_load((resources.files("anomaly_clustering.configs") / "anchors.yaml").read_text()) or {}
    except (FileNotFoundError, ModuleNotFoundError):
        return {}


def select_images(data: str, subset: int | None, seed: int, exclude_good: bool):
    """The benchmark's image set: all test images except ``combined`` (and ``good`` when ``exclude_good``), optionally
    a class-stratified random subset of ``subset`` images (evaluation protocol only; fit never sees the labels)."""
    from .data import load_ground_truth, load_image_set

    exclude = ["combined/*", "*/combined/*"] + (["good/*", "*/good/*"] if exclude_good else [])
    images = load_image_set(data, exclude=exclude)
    if subset and subset < len(images):
        gt = load_ground_truth(images)
        rng = np.random.default_rng(seed)
        labels = np.array(gt.labels)
        classes = sorted(set(gt.labels))
        share = {c: max(1, round(subset * np.mean(labels == c))) for c in classes}
        keep: list[int] = []
        for c in classes:
            idx = np.flatnonzero(labels == c)
            keep += sorted(rng.choice(idx, min(share[c], len(idx)), replace=False).tolist())
        images = images.subset(sorted(keep))
    return images


def run_combination(job: dict[str, Any]) -> dict[str, Any]:
    """Fit one localizer × classifier on one set and evaluate it (called in a child process)."""
    import resource
    import time

    from . import cli
    from .evaluation import evaluate_records
    from .pipeline import Pipeline
    from .runs import write_run

    images = select_images(job["data"], job["subset"], job["seed"], job["exclude_good"])
    chosen = {"localizer": job["localizer"], "classifier": job["classifier"]}
    argv, chosen = cli._prescan(["--localizer", job["localizer"], "--classifier", job["classifier"], "--data", job["data"], *job.get("extra", [])])
    cfg = cli._parse(cli.build_fit_parser(chosen), argv)
    cfg.n_clusters = job["n_clusters"]
    if job["seed"]:
        cfg.seed = job["seed"]
    pconf = cli._pipeline_config(cfg)
    t0 = time.perf_counter()
    pipe = Pipeline(pconf, job["cache_dir"], device=job.get("device", "auto"), quiet=True)
    result = pipe.fit(images)
    wall = time.perf_counter() - t0
    write_run(job["run"], result, {**{k: v for k, v in cfg.as_dict().items() if k != "config"}, "benchmark_subset": job["subset"]}, pipe.log, save_pngs=job.get("pngs", False))
    ev = evaluate_records(images, result.maps, result.clustering)
    return {
        "data": Path(job["data"]).parent.name if Path(job["data"]).name == "test" else Path(job["data"]).name,
        "localizer": job["localizer"],
        "classifier": job["classifier"],
        "n_images": len(images),
        "K": int(result.clustering.n_clusters),
        **{k: ev["clustering"][k] for k in ("nmi", "ari", "f1_micro", "f1_macro")},
        **{k: ev["localization"][k] for k in ("pro_30", "auroc_pixel", "auroc_image")},
        "masks": ev["localization"]["masks"],
        "seconds": {k: round(v, 2) for k, v in result.compute_seconds.items()},
        "wall_seconds": round(wall, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "backbone": result.embeddings.info.get("backbone") or pconf.shared.get("backbone") or "tf_efficientnet_lite0",
        "run": job["run"],
    }


def _anchor_for(anchors: dict, data: str, protocol: str, loc: str, clf: str) -> dict | None:
    table = anchors.get(data, {}).get(protocol, {})
    return table.get(f"{loc}/{clf}") or table.get(f"*/{clf}")


def format_table(rows: list[dict[str, Any]], anchors: dict[str, Any]) -> str:
    """The Markdown table: ours, the floor (Average on the same images) and the paper's figures with the difference."""
    f = lambda v: "—" if v is None else f"{v:.3f}"
    floor = {(r["data"], r["protocol"]): r for r in rows if r["classifier"] == FLOOR}
    lines = [
        "| set | protocol | localizer | classifier | N | K | NMI | ARI | F1 | F1 macro | floor NMI / F1 (Average) | paper NMI / ARI / F1 | Δ NMI | PRO@0.3 | AUROC px | AUROC img | s localize / represent | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fl = floor.get((r["data"], r["protocol"]))
        a = _anchor_for(anchors, r["data"], r["protocol"], r["localizer"], r["classifier"])
        paper = "—" if not a else " / ".join(f(a.get(k)) for k in ("nmi", "ari", "f1"))
        delta = "—" if not a or a.get("nmi") is None else f"{r['nmi'] - a['nmi']:+.3f}"
        s = r.get("seconds", {})
        lines.append(
            f"| {r['data']} | {r['protocol']} | {r['localizer']} | {r['classifier']} | {r['n_images']} | {r['K']} | {f(r['nmi'])} | {f(r['ari'])} | {f(r['f1_micro'])} | {f(r['f1_macro'])} | "
            f"{(f(fl['nmi']) + ' / ' + f(fl['f1_micro'])) if fl else '—'} | {paper} | {delta} | {f(r['pro_30'])} | {f(r['auroc_pixel'])} | {f(r['auroc_image'])} | "
            f"{s.get('localizer', 0):.1f} / {s.get('representation', 0):.1f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def benchmark_main(argv: list[str]) -> int:
    from jsonargparse import ArgumentParser

    from .cli import CLIError, _parse
    from .data import load_ground_truth

    p = ArgumentParser(prog="anomaly-cluster benchmark", description="localizers × classifiers on labelled sets (MVTec layout), one table", exit_on_error=False)
    p.add_argument("--data", nargs="+", type=str, required=True, help="labelled set folders (e.g. …/mtd/test)")
    p.add_argument("--localizers", type=str, default="fca", help="comma-separated localizer names")
    p.add_argument("--classifiers", type=str, default="weighted", help="comma-separated classifier names (the floor, average, is always added)")
    p.add_argument("--n_clusters", type=int | str, default="gt", help="'gt' (number of true types, the papers' protocol), 'auto', or an integer")
    p.add_argument("--exclude_good", type=bool, default=False, help="cluster only anomalous images (anomalyncd.txt's protocol)")
    p.add_argument("--subset", type=int | None, default=None, help="a class-stratified random subset of N images per set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=str, default="runs/benchmark", help="output folder (runs, cache, tables)")
    p.add_argument("--cache_dir", type=str | None, default=None, help="shared stage cache (default: <out>/cache)")
    p.add_argument("--report", type=bool, default=False, help="also write an HTML report per run and link it")
    p.add_argument("--fit_options", type=str, default="", help="extra fit options for every run, one string: e.g. '--input_size 256 --backbone mobilenet_v2'")
    p.add_argument("--device", type=str, default="auto")
    cfg = _parse(p, argv)
    import shlex

    cfg.extra = shlex.split(cfg.fit_options)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = cfg.cache_dir or str(out / "cache")
    protocol = "defects_only" if cfg.exclude_good else "with_good"
    classifiers = [FLOOR] + [c for c in cfg.classifiers.split(",") if c and c != FLOOR]
    localizers = [l for l in cfg.localizers.split(",") if l]
    done_file = out / "results.jsonl"
    done: dict[str, dict] = {}
    if done_file.exists():
        for line in done_file.read_text().splitlines():
            with_key = json.loads(line)
            done[with_key["key"]] = with_key
    rows = []
    for data in cfg.data:
        images = select_images(data, cfg.subset, cfg.seed, cfg.exclude_good)
        k = len(set(load_ground_truth(images).labels)) if cfg.n_clusters == "gt" else cfg.n_clusters
        set_name = Path(data).parent.name if Path(data).name == "test" else Path(data).name
        for loc in localizers:
            for clf in classifiers:
                if clf == FLOOR and loc != localizers[0]:
                    continue  # Average ignores the maps: one floor per set
                key = json.dumps([set_name, protocol, loc, clf, cfg.subset, cfg.seed, k, cfg.extra])
                if key in done:
                    rows.append(done[key])
                    print(f"[benchmark] {set_name} {loc} × {clf}: done earlier", flush=True)
                    continue
                run = out / "runs" / set_name / protocol / f"{loc}__{clf}"
                job = {"data": data, "localizer": loc, "classifier": clf, "n_clusters": k, "seed": cfg.seed, "subset": cfg.subset, "exclude_good": cfg.exclude_good, "cache_dir": cache, "run": str(run), "extra": cfg.extra, "device": cfg.device, "pngs": cfg.report}
                print(f"[benchmark] {set_name} ({len(images)} images, K={k}) {loc} × {clf} …", flush=True)
                proc = subprocess.run([sys.executable, "-m", "anomaly_clustering.benchmarking", json.dumps(job)], capture_output=True, text=True)
                if proc.returncode != 0:
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
                    print(f"[benchmark] {set_name} {loc} × {clf} FAILED: {tail[0]}", file=sys.stderr, flush=True)
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                row.update(key=key, protocol=protocol, data=set_name)
                if cfg.report:
                    from . import runtime
                    from .report import write_report

                    with runtime.settings(quiet=True):
                        row["report"] = str(write_report(str(run)))
                with open(done_file, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                rows.append(row)
                print(f"[benchmark]   NMI {row['nmi']:.3f}  ARI {row['ari']:.3f}  F1 {row['f1_micro']:.3f}  ({row['wall_seconds']:.0f} s, peak {row['peak_rss_mb']:.0f} MB)", flush=True)
    if not rows:
        raise CLIError("benchmark: no combination finished")
    table = format_table(rows, _anchors())
    if cfg.report:
        table += "\n\nReports: " + " · ".join(f"[{r['data']} {r['localizer']}×{r['classifier']}]({os.path.relpath(r['report'], out)})" for r in rows if r.get("report"))
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    buf = io.StringIO()
    flat = [{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in r.items() if k != "key"} for r in rows]
    w = csv.DictWriter(buf, fieldnames=list(flat[0].keys()))
    w.writeheader()
    w.writerows(flat)
    (out / "results.csv").write_text(buf.getvalue())
    print(table)
    print(f"\nwritten: {out / 'results.md'}, results.csv, results.json")
    return 0


if __name__ == "__main__":  # child process: one combination
    import warnings

    warnings.filterwarnings("ignore")
    print(json.dumps(run_combination(json.loads(sys.argv[1]))))

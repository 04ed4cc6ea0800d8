"""``anomaly-cluster benchmark``: every localizer × every classifier on labelled sets, over seeds, in one table.

Each combination runs in its own process (so its peak memory is its own) through the cached pipeline and writes its
result to a JSON file; all runs share one stage cache, so features and maps are computed once per localizer and set,
not once per classifier (and once per seed only for stages whose result depends on the seed). Finished runs are kept
in ``results.jsonl``: an interrupted benchmark resumes where it stopped.

Two tables: the detailed one (every run, with Sohn et al.'s Average on the same images, the floor, and the papers'
figures from ``configs/anchors.yaml``) and the summary over seeds: per set the floor, our NMI / ARI / F1 as mean ± std,
the gap closed ``g = (NMI − floor) / (1 − floor)`` at K = truth and at K = auto (with the estimated K), then the worst
set's g and the mean g. ``--suite benchmarks/suite.yaml`` names the sets and their protocols (paths relative to the
data root: ``--data_root``, ``$ANOMALY_CLUSTERING_DATA`` or ``../shared/data`` beside the repository).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

__all__ = [
    "benchmark_main",
    "select_images",
    "run_combination",
    "format_table",
    "SuiteSet",
    "load_suite",
    "resolve_data_root",
    "parse_seeds",
    "gap_closed",
    "summarize",
    "format_summary",
    "leave_one_set_out",
    "DATA_ENV",
]

FLOOR = "average"
DATA_ENV = "ANOMALY_CLUSTERING_DATA"
SUITE_KEYS = {"data", "n_clusters", "exclude_good", "subset", "subset_seed"}


# ------------------------------------------------------------------------------------------------ suite and data
@dataclass(frozen=True)
class SuiteSet:
    """One labelled set of the suite with its protocol: folder, number of true types, good images kept or not,
    and an optional class-stratified subset drawn once (``subset_seed``), the same images for every run seed."""

    name: str
    data: str
    n_clusters: int | str = "gt"
    exclude_good: bool = False
    subset: int | None = None
    subset_seed: int = 0

    @property
    def protocol(self) -> str:
        return "defects_only" if self.exclude_good else "with_good"


def repo_root() -> Path:
    """The folder that holds the ``anomaly_clustering`` package (the repository root in a source checkout)."""
    return Path(__file__).resolve().parents[1]


def resolve_data_root(option: str | None = None) -> Path:
    """The data root: the option, else ``$ANOMALY_CLUSTERING_DATA``, else ``../shared/data`` beside the repository."""
    root = option or os.environ.get(DATA_ENV) or str(repo_root().parent / "shared" / "data")
    return Path(root).expanduser()


def _resolve_file(path: str) -> Path:
    """A suite file given relative to the working directory or to the repository root."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    return repo_root() / p


def load_suite(path: str, data_root: str | None = None, only: Sequence[str] | None = None) -> list[SuiteSet]:
    """The sets of a suite YAML (``sets: {name: {data, n_clusters, exclude_good, subset, subset_seed}}``), their
    folders resolved against the data root; ``only``: these sets alone (the others' folders need not exist).
    Unknown keys, unknown names and missing folders are errors (before any run)."""
    from .config import ConfigError as CLIError

    file = _resolve_file(path)
    if not file.is_file():
        raise CLIError(f"--suite {path}: no such file")
    spec = yaml.safe_load(file.read_text()) or {}
    sets = spec.get("sets") if isinstance(spec, dict) else None
    if not isinstance(sets, dict) or not sets:
        raise CLIError(f"--suite {path}: expected a mapping 'sets:' of set name → protocol")
    root = resolve_data_root(data_root)
    unknown_sets = set(only or ()) - {str(n) for n in sets}
    if unknown_sets:
        raise CLIError(f"--sets: {sorted(unknown_sets)} not in the suite ({', '.join(map(str, sets))})")
    out: list[SuiteSet] = []
    for name, opts in sets.items():
        if only and str(name) not in only:
            continue
        opts = dict(opts or {})
        unknown = set(opts) - SUITE_KEYS
        if unknown:
            raise CLIError(f"--suite {path}: set {name!r} has unknown keys {sorted(unknown)} (allowed: {sorted(SUITE_KEYS)})")
        if "data" not in opts:
            raise CLIError(f"--suite {path}: set {name!r} needs 'data' (a folder relative to the data root)")
        if Path(opts["data"]).is_absolute():
            raise CLIError(f"--suite {path}: set {name!r}: 'data' must be relative to the data root, not {opts['data']!r}")
        folder = root / opts.pop("data")
        if not folder.is_dir():
            raise CLIError(f"--suite {path}: set {name!r}: {folder} is not a folder (data root {root}: --data_root or ${DATA_ENV})")
        out.append(SuiteSet(str(name), str(folder), **opts))
    return out


def parse_seeds(text: str | int | Sequence[int]) -> list[int]:
    """``"0,1,2"`` → [0, 1, 2] (distinct, in order)."""
    if isinstance(text, int):
        return [text]
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        seeds = [int(str(s).strip()) for s in items if str(s).strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise ValueError("--seeds: give at least one seed")
    return list(dict.fromkeys(seeds))


def _set_name(data: str) -> str:
    return Path(data).parent.name if Path(data).name == "test" else Path(data).name


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


# ------------------------------------------------------------------------------------------------ one run (child)
def run_combination(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Fit one localizer × classifier on one set and evaluate it, once per K mode in ``job["n_clusters"]`` (an int,
    ``"auto"``, or a list of them; later modes reuse the cached stages). Called in a child process."""
    import resource

    from . import config
    from .evaluation import evaluate_records
    from .pipeline import Pipeline
    from .runs import write_run

    images = select_images(job["data"], job["subset"], job.get("subset_seed", job["seed"]), job["exclude_good"])
    modes = job["n_clusters"] if isinstance(job["n_clusters"], list) else [job["n_clusters"]]
    rows = []
    for mode in modes:
        argv, chosen = config.prescan(["--localizer", job["localizer"], "--classifier", job["classifier"], "--data", job["data"], *job.get("extra", [])])
        cfg = config.parse_args(config.build_fit_parser(chosen), argv)
        cfg.n_clusters = mode
        if job.get("explicit_seed") or job["seed"]:
            cfg.seed = job["seed"]
        if job.get("k_max"):
            cfg.k_max = job["k_max"]
        pconf = config.config_from_namespace(cfg)
        t0 = time.perf_counter()
        pipe = Pipeline(pconf, job["cache_dir"], device=job.get("device", "auto"), quiet=True)
        result = pipe.fit(images)
        wall = time.perf_counter() - t0
        run = job["run"] + ("" if len(modes) == 1 else f"__k{mode}")
        write_run(run, result, {**{k: v for k, v in cfg.as_dict().items() if k != "config"}, "benchmark_subset": job["subset"]}, pipe.log, save_pngs=job.get("pngs", False))
        ev = evaluate_records(images, result.maps, result.clustering)
        rows.append({
            "data": _set_name(job["data"]),
            "localizer": job["localizer"],
            "classifier": job["classifier"],
            "seed": job["seed"],
            "k_mode": "auto" if mode == "auto" else "given",
            "n_images": len(images),
            "K": int(result.clustering.n_clusters),
            "k_curve": {str(k): round(float(v), 4) for k, v in result.clustering.k_curve.items()},
            **{k: ev["clustering"][k] for k in ("nmi", "ari", "f1_micro", "f1_macro")},
            **{k: ev["localization"][k] for k in ("pro_30", "auroc_pixel", "auroc_image")},
            "masks": ev["localization"]["masks"],
            "stability": None if result.stability is None else result.stability.to_dict()["score"],
            "seconds": {k: round(v, 2) for k, v in result.compute_seconds.items()},
            "wall_seconds": round(wall, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
            "backbone": result.embeddings.info.get("backbone") or pconf.shared.get("backbone") or "tf_efficientnet_lite0",
            "run": run,
        })
    return rows


def _run_child(job: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, str, float]:
    """Run one job in a fresh process; its rows come back through a JSON file (never parsed from stdout)."""
    fd, result_file = tempfile.mkstemp(prefix="benchmark-", suffix=".json", dir=job["out"])
    os.close(fd)
    job = {**job, "result_file": result_file}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "anomaly_clustering.benchmarking", json.dumps(job)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            return None, tail[0], wall
        text = Path(result_file).read_text()
        if not text.strip():
            return None, "the run wrote no result", wall
        return json.loads(text), "", wall
    finally:
        Path(result_file).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ tables
def _anchors() -> dict[str, Any]:
    from importlib import resources

    try:
        return yaml.safe_load((resources.files("anomaly_clustering.configs") / "anchors.yaml").read_text()) or {}
    except (FileNotFoundError, ModuleNotFoundError):
        return {}


def _anchor_for(anchors: dict, data: str, protocol: str, loc: str, clf: str) -> dict | None:
    table = anchors.get(data, {}).get(protocol, {})
    return table.get(f"{loc}/{clf}") or table.get(f"*/{clf}")


def format_table(rows: list[dict[str, Any]], anchors: dict[str, Any]) -> str:
    """The detailed Markdown table, one line per run: ours, the floor (Average on the same images, same seed) and the
    paper's figures with the difference."""
    f = lambda v: "—" if v is None else f"{v:.3f}"
    floor = {(r["data"], r["protocol"], r.get("seed", 0)): r for r in rows if r["classifier"] == FLOOR and r.get("k_mode", "given") == "given"}
    lines = [
        "| set | protocol | localizer | classifier | seed | N | K | NMI | ARI | F1 | F1 macro | floor NMI / F1 (Average) | paper NMI / ARI / F1 | Δ NMI | PRO@0.3 | AUROC px | AUROC img | s localize / represent | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fl = floor.get((r["data"], r["protocol"], r.get("seed", 0)))
        a = _anchor_for(anchors, r["data"], r["protocol"], r["localizer"], r["classifier"])
        paper = "—" if not a else " / ".join(f(a.get(k)) for k in ("nmi", "ari", "f1"))
        delta = "—" if not a or a.get("nmi") is None else f"{r['nmi'] - a['nmi']:+.3f}"
        s = r.get("seconds", {})
        k = f"{r['K']}" + (" (auto)" if r.get("k_mode") == "auto" else "")
        lines.append(
            f"| {r['data']} | {r['protocol']} | {r['localizer']} | {r['classifier']} | {r.get('seed', 0)} | {r['n_images']} | {k} | {f(r['nmi'])} | {f(r['ari'])} | {f(r['f1_micro'])} | {f(r['f1_macro'])} | "
            f"{(f(fl['nmi']) + ' / ' + f(fl['f1_micro'])) if fl else '—'} | {paper} | {delta} | {f(r['pro_30'])} | {f(r['auroc_pixel'])} | {f(r['auroc_image'])} | "
            f"{s.get('localizer', 0):.1f} / {s.get('representation', 0):.1f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def gap_closed(nmi: float, floor: float) -> float:
    """The share of the gap between the floor and a perfect clustering that a result closes: (NMI − floor)/(1 − floor).
    Negative below the floor; NaN when the floor is already perfect."""
    if floor >= 1.0:
        return float("nan")
    return (float(nmi) - float(floor)) / (1.0 - float(floor))


def _ms(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=0)) if len(a) > 1 else 0.0


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (set, localizer, classifier): means ± std over seeds of NMI / ARI / F1 and of g (each seed against the
    floor of the same seed), the worst seed's g, and the same at K = auto with the estimated K. The floor is
    Average + Ward at the true K (its own row, g = 0)."""
    floors = {(r["data"], r["protocol"], r.get("seed", 0)): r["nmi"] for r in rows if r["classifier"] == FLOOR and r.get("k_mode", "given") == "given"}
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        key = (r["data"], r["protocol"], r["localizer"], r["classifier"])
        groups.setdefault(key, {"given": [], "auto": []})[r.get("k_mode", "given")].append(r)
    out = []
    for (data, protocol, loc, clf), modes in groups.items():
        given = modes["given"]
        if not given:
            continue
        fl = [floors.get((data, protocol, r.get("seed", 0))) for r in given]
        if any(v is None for v in fl):
            fl = [None] * len(given)
        entry: dict[str, Any] = {"data": data, "protocol": protocol, "localizer": loc, "classifier": clf, "n_images": given[0]["n_images"],
                                 "K": given[0]["K"], "seeds": sorted(r.get("seed", 0) for r in given)}
        for k in ("nmi", "ari", "f1_micro"):
            entry[k] = _ms([r[k] for r in given])
        entry["floor"] = _ms([v for v in fl]) if fl[0] is not None else None
        gs = [gap_closed(r["nmi"], v) for r, v in zip(given, fl)] if fl[0] is not None else []
        entry["g"] = _ms(gs) if gs else None
        entry["g_min"] = min(gs) if gs else None
        entry["seconds"] = float(sum(r.get("child_seconds", r.get("wall_seconds", 0.0)) for rs in modes.values() for r in rs))
        auto = modes["auto"]
        if auto:
            fa = [floors.get((data, protocol, r.get("seed", 0))) for r in auto]
            entry["auto"] = {
                "K": [r["K"] for r in sorted(auto, key=lambda r: r.get("seed", 0))],
                "nmi": _ms([r["nmi"] for r in auto]),
                "g": _ms([gap_closed(r["nmi"], v) for r, v in zip(auto, fa)]) if all(v is not None for v in fa) else None,
            }
        out.append(entry)
    return out


def format_summary(summary: list[dict[str, Any]]) -> str:
    """The summary table over seeds, then per localizer × classifier the worst set's g and the mean g."""
    pm = lambda t: "—" if t is None else f"{t[0]:.3f} ± {t[1]:.3f}"
    one = lambda v, fmt=".3f": "—" if v is None else format(v, fmt)
    lines = [
        "| set | N | K | localizer | classifier | seeds | floor NMI | NMI | ARI | F1 | g (mean ± std) | g worst seed | K auto (per seed) | NMI at K auto | g at K auto | s (all seeds) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        a = e.get("auto")
        lines.append(
            f"| {e['data']} | {e['n_images']} | {e['K']} | {e['localizer']} | {e['classifier']} | {','.join(map(str, e['seeds']))} | "
            f"{one(e['floor'] and e['floor'][0])} | {pm(e['nmi'])} | {pm(e['ari'])} | {pm(e['f1_micro'])} | {pm(e['g'])} | "
            f"{one(e['g_min'], '+.3f')} | {'—' if not a else ','.join(map(str, a['K']))} | {'—' if not a else pm(a['nmi'])} | "
            f"{'—' if not a or a['g'] is None else pm(a['g'])} | {e['seconds']:.0f} |"
        )
    lines.append("")
    combos: dict[tuple[str, str], list[dict]] = {}
    for e in summary:
        if e["classifier"] != FLOOR and e["g"] is not None:
            combos.setdefault((e["localizer"], e["classifier"]), []).append(e)
    for (loc, clf), es in combos.items():
        g = [e["g"][0] for e in es]
        worst = min(es, key=lambda e: e["g"][0])
        below = sum(1 for e in es if e["g_min"] is not None and e["g_min"] < 0)
        line = (f"- **{loc} × {clf}**: worst set {worst['data']} g = {worst['g'][0]:.3f}; mean g = {float(np.mean(g)):.3f} over {len(es)} sets; "
                f"sets with a seed below the floor: {below}")
        autos = [e for e in es if e.get("auto")]
        if autos:
            within = sum(1 for e in autos if all(abs(k - e["K"]) <= 1 for k in e["auto"]["K"]))
            close = sum(1 for e in autos if e["auto"]["nmi"][0] >= e["nmi"][0] - 0.05)
            line += f"; K auto within ±1 of the truth on {within}/{len(autos)} sets (every seed), NMI at K auto within 0.05 of NMI at the true K on {close}/{len(autos)}"
        lines.append(line)
    lines.extend(format_leave_one_set_out(leave_one_set_out(summary)))
    return "\n".join(lines)


def leave_one_set_out(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The default-choosing rule checked on data it did not see: for each set held out, the localizer × classifier
    with the best worst-seed g over the *other* sets (ties: the higher mean g), and that pick's g on the held-out
    set. Only combinations measured on every set take part; empty with fewer than three sets or two combinations."""
    table: dict[tuple[str, str], dict[str, dict]] = {}
    for e in summary:
        if e["classifier"] != FLOOR and e["g"] is not None and e["g_min"] is not None:
            table.setdefault((e["localizer"], e["classifier"]), {})[e["data"]] = e
    sets = sorted({d for es in table.values() for d in es})
    full = {c: es for c, es in table.items() if all(d in es for d in sets)}
    if len(sets) < 3 or len(full) < 2:
        return []
    folds = []
    for held in sets:
        rest = [d for d in sets if d != held]
        rank = {c: (min(es[d]["g_min"] for d in rest), float(np.mean([es[d]["g"][0] for d in rest]))) for c, es in full.items()}
        pick = max(sorted(rank), key=lambda c: rank[c])
        folds.append({"held_out": held, "pick": pick, "worst_seed_g_on_rest": rank[pick][0],
                      "g": full[pick][held]["g"][0], "g_min": full[pick][held]["g_min"]})
    return folds


def format_leave_one_set_out(folds: list[dict[str, Any]]) -> list[str]:
    """Markdown lines for :func:`leave_one_set_out` (nothing when it has no folds)."""
    if not folds:
        return []
    lines = ["", "Leave one set out (pick: the best worst-seed g on the other sets; then its g on the held-out set):", ""]
    for f in folds:
        loc, clf = f["pick"]
        verdict = "above the floor on every seed" if f["g_min"] >= 0 else "**below the floor on a seed**"
        lines.append(f"- without {f['held_out']}: {loc} × {clf} (worst seed {f['worst_seed_g_on_rest']:+.3f} on the rest) → "
                     f"{f['held_out']} g = {f['g']:.3f}, worst seed {f['g_min']:+.3f}: {verdict}")
    return lines


# ------------------------------------------------------------------------------------------------ command
def _parse_k_modes(text: Any) -> list[Any]:
    modes = []
    for part in str(text).split(","):
        part = part.strip()
        if part in ("gt", "auto"):
            modes.append(part)
        else:
            try:
                modes.append(int(part))
            except ValueError:
                from .config import ConfigError as CLIError

                raise CLIError(f"--n_clusters {text!r}: give 'gt', 'auto', an integer, or a comma-separated list of them") from None
    return list(dict.fromkeys(modes))


def _write_outputs(out: Path, rows: list[dict[str, Any]], report: bool) -> str:
    table = format_table(rows, _anchors())
    summary = summarize(rows)
    text = "## Summary over seeds\n\n" + format_summary(summary) + "\n\n## Every run\n\n" + table
    if report:
        text += "\n\nReports: " + " · ".join(f"[{r['data']} {r['localizer']}×{r['classifier']} seed {r.get('seed', 0)}]({os.path.relpath(r['report'], out)})" for r in rows if r.get("report"))
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    buf = io.StringIO()
    flat = [{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in r.items() if k != "key"} for r in rows]
    fields = list(dict.fromkeys(k for r in flat for k in r))
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(flat)
    (out / "results.csv").write_text(buf.getvalue())
    return text


def benchmark_main(argv: list[str]) -> int:
    """``anomaly-cluster benchmark``: run every set × seed × localizer × classifier not finished earlier (each in a
    fresh process), then write the tables."""
    from .config import ConfigError as CLIError
    from .config import parse_args as _parse

    cfg = _parse(_benchmark_parser(), argv)
    plan = _plan(cfg)
    plan.out.mkdir(parents=True, exist_ok=True)
    done = _finished_rows(plan.out / "results.jsonl")
    rows = [row for s in plan.sets for row in _benchmark_set(plan, s, done)]
    if not rows:
        raise CLIError("benchmark: no combination finished")
    text = _write_outputs(plan.out, rows, cfg.report)
    print(text)
    print(f"\nwritten: {plan.out / 'results.md'}, results.csv, results.json, summary.json")
    return 0


def _benchmark_parser() -> Any:
    from jsonargparse import ArgumentParser

    p = ArgumentParser(prog="anomaly-cluster benchmark", description="localizers × classifiers on labelled sets (MVTec layout), one table", exit_on_error=False)
    p.add_argument("--data", nargs="+", type=str, default=[], help="labelled set folders (e.g. …/mtd/test); or --suite")
    p.add_argument("--suite", type=str | None, default=None, help="a suite YAML (e.g. benchmarks/suite.yaml): sets and their protocols")
    p.add_argument("--sets", type=str | None, default=None, help="comma-separated names of the suite's sets to run (default: all)")
    p.add_argument("--data_root", type=str | None, default=None, help=f"folder the suite's paths are relative to (default ${DATA_ENV}, else ../shared/data beside the repository)")
    p.add_argument("--localizers", type=str, default="fca", help="comma-separated localizer names")
    p.add_argument("--classifiers", type=str, default="weighted", help="comma-separated classifier names (the floor, average, is always added)")
    p.add_argument("--n_clusters", type=int | str, default=None, help="'gt' (number of true types), 'auto', an integer, or a list 'gt,auto' (default: gt; with --suite gt,auto)")
    p.add_argument("--k_max", type=int | None, default=None, help="largest K tried when n_clusters is auto (default: fit's)")
    p.add_argument("--exclude_good", type=bool, default=False, help="cluster only anomalous images (anomalyncd.txt's protocol)")
    p.add_argument("--subset", type=int | None, default=None, help="a class-stratified random subset of N images per set")
    p.add_argument("--seed", type=int, default=0, help="the run seed (and the subset's) when --seeds is not given")
    p.add_argument("--seeds", type=str | None, default=None, help="comma-separated run seeds, e.g. 0,1,2: every figure becomes a mean ± std over them (subsets stay those of --seed)")
    p.add_argument("--out", type=str, default="runs/benchmark", help="output folder (runs, cache, tables)")
    p.add_argument("--cache_dir", type=str | None, default=None, help="shared stage cache (default: <out>/cache)")
    p.add_argument("--report", type=bool, default=False, help="also write an HTML report per run and link it")
    p.add_argument("--fit_options", type=str, default="", help="extra fit options for every run, one string: e.g. '--input_size 256 --backbone mobilenet_v2'")
    p.add_argument("--device", type=str, default="auto")
    return p


@dataclass(frozen=True)
class _Plan:
    """What a benchmark run covers (from its options): sets, seeds, plugins, K modes, where outputs go."""

    sets: list[SuiteSet]
    seeds: list[int]
    explicit_seed: bool
    localizers: list[str]
    classifiers: list[str]
    k_modes: list[Any]
    extra: list[str]
    out: Path
    cache: str
    cfg: Any


def _plan(cfg: Any) -> _Plan:
    import shlex

    from .config import ConfigError as CLIError

    try:
        seeds = parse_seeds(cfg.seeds) if cfg.seeds is not None else [cfg.seed]
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if cfg.suite:
        if cfg.data:
            raise CLIError("give --suite or --data, not both")
        sets = load_suite(cfg.suite, cfg.data_root, [x for x in (cfg.sets or "").split(",") if x] or None)
    elif cfg.data:
        sets = [SuiteSet(_set_name(d), d, "gt", cfg.exclude_good, cfg.subset, cfg.seed) for d in cfg.data]
    else:
        raise CLIError("give --data folders or --suite benchmarks/suite.yaml")
    k_modes = _parse_k_modes(cfg.n_clusters if cfg.n_clusters is not None else ("gt,auto" if cfg.suite else "gt"))
    out = Path(cfg.out)
    return _Plan(sets, seeds, cfg.seeds is not None, [l for l in cfg.localizers.split(",") if l],
                 [FLOOR] + [c for c in cfg.classifiers.split(",") if c and c != FLOOR], k_modes, shlex.split(cfg.fit_options),
                 out, cfg.cache_dir or str(out / "cache"), cfg)


def _finished_rows(done_file: Path) -> dict[str, dict]:
    """Rows of runs finished earlier (``results.jsonl``), by their key."""
    done: dict[str, dict] = {}
    if done_file.exists():
        for line in done_file.read_text().splitlines():
            row = json.loads(line)
            done[row["key"]] = row
    return done


def _benchmark_set(plan: _Plan, s: SuiteSet, done: dict[str, dict]) -> list[dict[str, Any]]:
    """Every seed × localizer × classifier on one set: rows finished earlier are reused, the others run."""
    from .data import load_ground_truth

    images = select_images(s.data, s.subset, s.subset_seed, s.exclude_good)
    k_true = len(set(load_ground_truth(images).labels))
    set_k = k_true if s.n_clusters == "gt" else int(s.n_clusters)
    if s.n_clusters != "gt" and set_k != k_true:
        print(f"[benchmark] {s.name}: the suite says K = {set_k}, the labels hold {k_true} types; using {set_k}", flush=True)
    rows = []
    for seed in plan.seeds:
        for loc in plan.localizers:
            for clf in plan.classifiers:
                if clf == FLOOR and loc != plan.localizers[0]:
                    continue  # Average ignores the maps: one floor per set and seed
                modes = [set_k if m == "gt" else m for m in (plan.k_modes if clf != FLOOR else [m for m in plan.k_modes if m != "auto"] or ["gt"])]
                keys = {m: json.dumps([s.name, s.protocol, loc, clf, s.subset, s.subset_seed, seed, m, plan.extra, plan.cfg.k_max]) for m in modes}
                todo = [m for m in modes if keys[m] not in done]
                rows += [done[keys[m]] for m in modes if keys[m] in done]
                if not todo:
                    print(f"[benchmark] {s.name} seed {seed} {loc} × {clf}: done earlier", flush=True)
                    continue
                print(f"[benchmark] {s.name} ({len(images)} images, K={set_k}) seed {seed} {loc} × {clf} (K: {', '.join(map(str, todo))}) …", flush=True)
                rows += _run_job(plan, s, seed, loc, clf, todo, keys)
    return rows


def _run_job(plan: _Plan, s: SuiteSet, seed: int, loc: str, clf: str, todo: list[Any], keys: dict[Any, str]) -> list[dict[str, Any]]:
    """One localizer × classifier × seed in a child process; its rows (one per K mode) are appended to
    ``results.jsonl`` as they come, with an HTML report each when asked."""
    cfg = plan.cfg
    run = plan.out / "runs" / s.name / s.protocol / f"seed{seed}" / f"{loc}__{clf}"
    job = {"data": s.data, "localizer": loc, "classifier": clf, "n_clusters": todo, "seed": seed, "explicit_seed": plan.explicit_seed,
           "subset": s.subset, "subset_seed": s.subset_seed, "exclude_good": s.exclude_good, "cache_dir": plan.cache, "run": str(run),
           "extra": plan.extra, "device": cfg.device, "pngs": cfg.report, "k_max": cfg.k_max, "out": str(plan.out)}
    result, error, wall = _run_child(job)
    if result is None:
        print(f"[benchmark] {s.name} seed {seed} {loc} × {clf} FAILED: {error}", file=sys.stderr, flush=True)
        return []
    rows = []
    for m, row in zip(todo, result):
        row.update(key=keys[m], protocol=s.protocol, data=s.name, child_seconds=round(wall / len(result), 2))
        if cfg.report:
            from . import runtime
            from .report import write_report

            with runtime.settings(quiet=True):
                row["report"] = str(write_report(row["run"]))
        with open(plan.out / "results.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        rows.append(row)
        print(f"[benchmark]   K={row['K']}{' (auto)' if m == 'auto' else ''}  NMI {row['nmi']:.3f}  ARI {row['ari']:.3f}  F1 {row['f1_micro']:.3f}  ({row['wall_seconds']:.0f} s, peak {row['peak_rss_mb']:.0f} MB)", flush=True)
    return rows


if __name__ == "__main__":  # child process: one combination, its rows written to the job's result file
    import warnings

    warnings.filterwarnings("ignore")
    _job = json.loads(sys.argv[1])
    _rows = run_combination(_job)
    Path(_job["result_file"]).write_text(json.dumps(_rows))

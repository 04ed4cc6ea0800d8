"""``anomaly-cluster``: list | fit | predict | evaluate | report | benchmark (jsonargparse, YAML configs).

A thin layer: the parser of ``fit`` and the merge of preset, plugin options and shared settings live in
:mod:`anomaly_clustering.config` (one rule for CLI, API and benchmark); predicting with a finished run is
:func:`anomaly_clustering.api.load_run`. Plugin options reach the command line from each plugin's ``__init__``
signature: after ``--localizer fca`` the options ``--localizer.<name>`` exist, with the plugin's defaults.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Literal, Sequence

from . import config
from .config import STAGES, check_plugins
from .config import ConfigError as CLIError
from .config import one_line as _one_line
# short local names for the config plumbing this module calls
from .config import config_from_namespace as _pipeline_config
from .config import parse_args as _parse
from .config import prescan as _prescan

__all__ = ["main", "build_fit_parser", "CLIError"]

COMMANDS = {
    "list": "show the installed plugins (localizers, binarizers, representations, clusterers, classifiers)",
    "fit": "localize, binarize, represent and cluster a folder of images; writes a run folder",
    "predict": "assign new images to the clusters of a finished run, without refitting",
    "evaluate": "score a run against ground truth (MVTec layout or CSV): NMI / ARI / F1, PRO / AUROC",
    "report": "write a static HTML page for a run",
    "benchmark": "run localizers × classifiers on labelled sets and print one table",
    "example": "write a small generated example set (MVTec layout, three defect kinds) to a folder",
    "relabel": "apply an edit file to a run's clusters (names, merges, moves, splits), or --undo the last one",
    "refit": "re-cluster a run's unnamed images, its named clusters serving as labelled base classes",
    "export": "write a run's named clusters as folders, an MVTec AD tree or COCO instance masks",
}


def build_fit_parser(chosen: dict[str, Any], command: str = "fit") -> Any:
    """The jsonargparse parser of ``fit`` for the chosen plugins (their options included)."""
    return config.build_fit_parser(chosen, command, COMMANDS[command])


def _usage() -> str:
    lines = ["usage: anomaly-cluster COMMAND [options]   (anomaly-cluster COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- commands
def cmd_list(argv: list[str]) -> int:
    from jsonargparse import ArgumentParser

    from . import registry
    from .backbones import list_backbones

    p = ArgumentParser(prog="anomaly-cluster list", description=COMMANDS["list"], exit_on_error=False)
    p.add_argument("--kind", type=str | None, default=None, help="only this kind")
    p.add_argument("--json", type=bool, nargs="?", const=True, default=False, help="machine-readable output")
    cfg = _parse(p, argv)
    if cfg.kind and cfg.kind not in registry.KINDS:
        raise CLIError(f"--kind {cfg.kind}: choose one of {', '.join(registry.KINDS)}")
    rows = registry.plugins(cfg.kind)
    if cfg.json:
        print(json.dumps([{"kind": r.kind, "name": r.name, "distribution": r.distribution, "version": r.version, "status": r.status, "summary": r.summary} for r in rows], indent=1))
        return 0
    header = ("KIND", "NAME", "DISTRIBUTION", "VERSION", "STATUS", "SUMMARY")
    table = [(r.kind, r.name, r.distribution, r.version, "ok" if r.ok else "BROKEN", r.summary if r.ok else r.status) for r in rows]
    widths = [max(len(str(x[i])) for x in [header, *table]) for i in range(5)]
    for row in [header, *table]:
        print("  ".join(str(v).ljust(widths[i]) for i, v in enumerate(row[:5])) + "  " + str(row[5]))
    if not cfg.kind:
        print("\nbackbones (offline weights: see README): " + ", ".join(b.name for b in list_backbones()) + ", or any timm name")
    return 0


def cmd_fit(argv: list[str]) -> int:
    from . import runtime
    from .data import load_image_set
    from .distributed import DistributedConfig, launch
    from .pipeline import Pipeline, RunLock
    from .runs import write_run

    argv, chosen = _prescan(argv)
    parser = build_fit_parser(chosen)
    cfg = _parse(parser, argv)
    pconf = _pipeline_config(cfg)
    from . import command_checks

    command_checks.validate_fit(cfg, pconf)  # every option checked before any work
    check_plugins(pconf)  # fail on bad plugin options before any work
    dist = DistributedConfig(cfg.accelerator, cfg.devices, cfg.num_nodes, cfg.strategy)
    device = cfg.device
    if not dist.is_multi_process and cfg.accelerator not in ("auto", None) and device == "auto":
        device = {"gpu": "cuda"}.get(cfg.accelerator, cfg.accelerator)
    fabric = launch(dist)  # several processes: from here on, this runs once per rank
    main = fabric is None or fabric.global_rank == 0
    images = load_image_set(cfg.data, cfg.include, cfg.exclude, strict=cfg.strict)
    normal = load_image_set(cfg.normal_dir, strict=cfg.strict) if cfg.normal_dir else None
    command_checks.validate_fit_images(images, pconf.n_clusters)
    run = Path(cfg.run)
    t0 = time.perf_counter()
    with runtime.settings(fabric=fabric), (RunLock(run) if main else contextlib.nullcontext()):
        pipe = Pipeline(pconf, cfg.cache_dir or run / "cache", device=device, quiet=cfg.quiet)
        if not cfg.quiet and main:
            processes = f" on {fabric.world_size} processes ({fabric.strategy.__class__.__name__}, {fabric.device.type})" if fabric else ""
            print(f"anomaly-cluster fit: {len(images)} images from {images.root}" + (f" ({len(images.skipped)} skipped)" if images.skipped else "") + processes)
        result = pipe.fit(images, normal)
        resolved = {k: v for k, v in cfg.as_dict().items() if k != "config"}
        resolved["classifier"] = cfg.classifier
        for stage in STAGES:  # the options each stage really ran with (shared settings applied)
            resolved[stage] = {"name": pconf.spec(stage).name, **pipe.stage_options(stage)}
        if main:
            extra = {"total_seconds": round(time.perf_counter() - t0, 2), "processes": fabric.world_size if fabric else 1}
            write_run(run, result, resolved, pipe.log, save_pngs=cfg.save_pngs, extra_summary=extra)
        runtime.barrier()  # every rank ends together
    if main:
        sizes = [int((result.clustering.labels == k).sum()) for k in range(result.clustering.n_clusters)]
        print(f"{len(images)} images → {result.clustering.n_clusters} clusters (sizes {sizes}); run folder: {run}  [{time.perf_counter() - t0:.1f} s]")
    return 0


def cmd_predict(argv: list[str]) -> int:
    from jsonargparse import ArgumentParser

    from .api import load_run
    from .data import load_image_set
    from .runs import write_predictions

    p = ArgumentParser(prog="anomaly-cluster predict", description=COMMANDS["predict"], exit_on_error=False)
    p.add_argument("--run", type=str, required=True, help="a finished run folder")
    p.add_argument("--data", type=str, required=True, help="folder of new images")
    p.add_argument("--output", type=str | None, default=None, help="where to write predictions (default: <run>/predictions)")
    p.add_argument("--include", nargs="+", type=str, default=[])
    p.add_argument("--exclude", nargs="+", type=str, default=[])
    p.add_argument("--device", type=str, default="auto")
    p.add_argument("--strict", type=bool, nargs="?", const=True, default=False)
    p.add_argument("--save_pngs", type=bool, nargs="?", const=True, default=True)
    p.add_argument("--quiet", type=bool, nargs="?", const=True, default=False)
    p.add_argument("--reject", type=str, default="0.99", help="quantile of fitted distances beyond which an image is 'unknown', or 'off'")
    cfg = _parse(p, argv)
    from .command_checks import validate_predict

    validate_predict(cfg)
    reject = _reject_quantile(cfg.reject)
    fitted = load_run(cfg.run)
    fitted.check_can_predict()  # before reading any image
    images = load_image_set(cfg.data, cfg.include, cfg.exclude, strict=cfg.strict)
    pred = fitted.predict(images, device=cfg.device, quiet=cfg.quiet)
    out = write_predictions(cfg.output or Path(cfg.run) / "predictions", images, pred.anomaly_maps, pred.regions, pred.clustering, cfg.save_pngs)
    counts = _open_set_hook(Path(cfg.run), images, pred.embeddings, pred.clustering, reject, out / "predictions.csv")
    print(f"{len(images)} images assigned: {counts}; written to {out / 'predictions.csv'}")
    return 0


def cmd_evaluate(argv: list[str]) -> int:
    from jsonargparse import ArgumentParser

    from .evaluation import evaluate_run, format_evaluation

    p = ArgumentParser(prog="anomaly-cluster evaluate", description=COMMANDS["evaluate"], exit_on_error=False)
    p.add_argument("--run", type=str, required=True, help="a finished run folder")
    p.add_argument("--labels", type=str | None, default=None, help="CSV with columns image,label[,mask] (default: the MVTec layout of the run's images)")
    p.add_argument("--json", type=bool, nargs="?", const=True, default=False, help="print JSON instead of a table")
    cfg = _parse(p, argv)
    from .command_checks import validate_evaluate

    validate_evaluate(cfg)
    result = evaluate_run(cfg.run, cfg.labels)
    print(json.dumps(result, indent=1) if cfg.json else format_evaluation(result))
    return 0


def cmd_report(argv: list[str]) -> int:
    from jsonargparse import ArgumentParser

    from .report import write_report

    p = ArgumentParser(prog="anomaly-cluster report", description=COMMANDS["report"], exit_on_error=False)
    p.add_argument("--run", type=str, required=True, help="a finished run folder")
    p.add_argument("--labels", type=str | None, default=None, help="optional ground-truth CSV (default: MVTec layout if present)")
    cfg = _parse(p, argv)
    from .command_checks import validate_report

    validate_report(cfg)
    page = write_report(cfg.run, cfg.labels)
    print(f"report: {page}")
    return 0


def cmd_benchmark(argv: list[str]) -> int:
    from .benchmarking import benchmark_main

    return benchmark_main(argv)


def cmd_example(argv: list[str]) -> int:
    from jsonargparse import ArgumentParser

    from .examples import make_example_set

    p = ArgumentParser(prog="anomaly-cluster example", description=COMMANDS["example"], exit_on_error=False)
    p.add_argument("folder", type=str, help="where to write the set")
    p.add_argument("--per_kind", type=int, default=12, help="images per defect kind")
    p.add_argument("--n_good", type=int, default=12, help="defect-free images")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", type=Literal["texture", "object"], default="texture", help="a woven texture, or a disc on a plain background (its position, size and shade vary) with the defects on its face")
    cfg = _parse(p, argv)
    test = make_example_set(cfg.folder, cfg.per_kind, cfg.n_good, cfg.size, cfg.seed, kind=cfg.kind)
    print(f"example set written: {test} (types: good, scratch, hole, stain; masks in {Path(cfg.folder) / 'ground_truth'})")
    return 0


def _reject_quantile(value: str) -> float | None:
    from .openset import parse_reject

    try:
        return parse_reject(value)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _open_set_hook(run_dir: Path, images, emb, clustering, reject: float | None, csv_path: Path) -> dict[str, int]:
    """predict's open-set step: current cluster names, ``good``, ``unknown`` beyond the radius, fitted images kept."""
    from .openset import annotate_predictions, open_set_predict

    result = open_set_predict(run_dir, images, emb, clustering, reject)
    annotate_predictions(csv_path, result)
    return {n: result.names.count(n) for n in sorted(set(result.names))}


def cmd_relabel(argv: list[str]) -> int:
    from jsonargparse import ArgumentParser

    from .labelling import Edits, RunLabels, describe

    p = ArgumentParser(prog="anomaly-cluster relabel", description=COMMANDS["relabel"], exit_on_error=False)
    p.add_argument("--run", type=str, required=True, help="a finished run folder")
    p.add_argument("--edits", type=str | None, default=None, help="edit file (YAML or JSON: names, merge, move, split)")
    p.add_argument("--undo", type=bool, nargs="?", const=True, default=False, help="take back the last applied edit file")
    cfg = _parse(p, argv)
    if bool(cfg.edits) == bool(cfg.undo):
        raise CLIError("give either --edits FILE or --undo")
    labels = RunLabels(cfg.run)
    state = labels.undo() if cfg.undo else labels.apply(Edits.read(cfg.edits))
    print(f"{'undone' if cfg.undo else 'applied'}; {len(labels.history())} edit file(s) in the history; clusters: {describe(state)}; labels: {labels.path / 'labels.csv'}")
    return 0


def cmd_refit(argv: list[str]) -> int:
    from jsonargparse import ArgumentParser

    from .labelling import describe
    from .refit import BASES, HEADS, refit_run

    p = ArgumentParser(prog="anomaly-cluster refit", description=COMMANDS["refit"], exit_on_error=False)
    p.add_argument("--run", type=str, required=True, help="a run folder with named clusters")
    p.add_argument("--base", type=str, default="named", help=f"labelled images: {' or '.join(BASES)} (named: all members of named clusters; reviewed: only images moved by hand)")
    p.add_argument("--head", type=str, default="logistic", help=f"{' or '.join(HEADS)} (logistic: a classifier on the embeddings, leftovers to Ward; seeded-kmeans: constrained k-means)")
    p.add_argument("--quantile", type=float, default=0.9, help="logistic head: an image joins a named class within this quantile of its members' distances")
    p.add_argument("--n_novel", type=int | None, default=None, help="clusters for the rest (default: as many as were unnamed)")
    p.add_argument("--seed", type=int, default=0)
    cfg = _parse(p, argv)
    state, result = refit_run(cfg.run, cfg.base, cfg.quantile, cfg.n_novel, cfg.seed, cfg.head)
    print(f"refit: {result.n_labelled} labelled, {result.n_accepted} joined a named class, {result.n_pooled} re-clustered; clusters: {describe(state)} (relabel --undo takes it back)")
    return 0


def cmd_export(argv: list[str]) -> int:
    from jsonargparse import ArgumentParser

    from .export import FORMATS, LINKS, export_run

    p = ArgumentParser(prog="anomaly-cluster export", description=COMMANDS["export"], exit_on_error=False)
    p.add_argument("out", type=str, help="output folder")
    p.add_argument("--run", type=str, required=True, help="a finished run folder")
    p.add_argument("--format", type=str, default="folders", help=" | ".join(FORMATS))
    p.add_argument("--link", type=str, default="copy", help=" | ".join(LINKS))
    p.add_argument("--include_unnamed", type=bool, nargs="?", const=True, default=False, help="also export unnamed clusters as cluster-<id>")
    cfg = _parse(p, argv)
    counts = export_run(cfg.run, cfg.format, cfg.out, cfg.link, cfg.include_unnamed)
    print(f"exported {sum(counts.values())} images ({cfg.format}) to {cfg.out}: {counts}")
    return 0


HANDLERS = {"list": cmd_list, "fit": cmd_fit, "predict": cmd_predict, "evaluate": cmd_evaluate, "report": cmd_report, "benchmark": cmd_benchmark, "example": cmd_example,
            "relabel": cmd_relabel, "refit": cmd_refit, "export": cmd_export}


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    _close_progress_bars()
    print(f"warning: {message}", file=sys.stderr)


def _close_progress_bars() -> None:
    """Clear any progress bar an error interrupted, so the message starts its own line."""
    tqdm = sys.modules.get("tqdm.std")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()) or ()):
        with contextlib.suppress(Exception):
            bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in HANDLERS:
        print(f"anomaly-cluster: error: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from .backbones import BackboneConfigError, MissingWeightsError
    from .data import DataError
    from .distributed import DistributedConfigError
    from .pipeline import PipelineError, RunLockedError
    from .registry import PluginError
    from .store import StoreError
    from .command_checks import ValidationError

    warnings.showwarning = _warning_line
    warnings.filterwarnings("ignore", module="lightning")
    user_errors = (CLIError, DataError, PipelineError, PluginError, MissingWeightsError, BackboneConfigError, StoreError, RunLockedError, DistributedConfigError, ValidationError)
    try:
        return HANDLERS[command](rest) or 0
    except user_errors as exc:
        _close_progress_bars()
        print(f"anomaly-cluster {command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        _close_progress_bars()
        if getattr(exc, "errno", None) == 28:  # ENOSPC
            where = f" writing {exc.filename}" if exc.filename else ""
            print(f"anomaly-cluster {command}: error: disk full{where}; free space and rerun: completed stages are kept", file=sys.stderr)
            return 3
        if getattr(exc, "errno", None) in (1, 13, 30):  # EPERM, EACCES, EROFS: a folder the user cannot write
            print(f"anomaly-cluster {command}: error: cannot write {exc.filename or 'a file'}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        raise
    except SystemExit as exc:  # --help and --print_config finish early: return their code like every command
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print(f"anomaly-cluster {command}: interrupted; rerun the same command to resume from the cached stages", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

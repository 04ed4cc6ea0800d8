"""``anomaly-cluster``: list | fit | predict | evaluate | report | benchmark (jsonargparse, YAML configs).

Plugin options reach the command line from each plugin's ``__init__`` signature: after ``--localizer fca`` the
options ``--localizer.<name>`` exist, with the plugin's defaults, types and docstring. The parser is therefore
built in two passes: the first finds which plugins were chosen (on the command line or in ``--config`` files), the
second adds their options.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import yaml

__all__ = ["main", "build_fit_parser"]

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
STAGES = ("localizer", "binarizer", "representation", "clusterer")
DEFAULT_LOCALIZER = "fca-vae"
FALLBACK_LOCALIZER = "color-stats"
DEFAULT_CLASSIFIER = "anomaly-context"


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


# ----------------------------------------------------------------------------------------------------- helpers
def _usage() -> str:
    lines = ["usage: anomaly-cluster COMMAND [options]   (anomaly-cluster COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def _load_yaml(value: str) -> dict[str, Any]:
    """A --config value: a YAML file path (or a YAML/JSON string, as jsonargparse accepts)."""
    p = Path(value)
    try:
        if p.exists():
            data = yaml.safe_load(p.read_text())
        elif value.lstrip().startswith("{") or ":" in value:
            data = yaml.safe_load(value)
        else:
            raise CLIError(f"--config {value}: no such file")
    except yaml.YAMLError as exc:
        raise CLIError(f"--config {value}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CLIError(f"--config {value}: expected a mapping of options at the top level")
    return data


def _find_config(name: str) -> str:
    """A --config value that names a bundled config (``blind-lca`` or ``blind-lca.yaml``) resolves to its file."""
    if Path(name).exists():
        return name
    from importlib import resources

    for cand in (name, f"{name}.yaml"):
        try:
            res = resources.files("anomaly_clustering.configs") / Path(cand).name
            if res.is_file() and (cand == Path(cand).name or cand.startswith("configs/")):
                return str(res)
        except (ModuleNotFoundError, FileNotFoundError):
            break
    return name


def _normalise_config(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    for stage in STAGES:
        if isinstance(out.get(stage), str):
            out[stage] = {"name": out[stage]}
    return out


def _prescan(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Rewrite ``--<stage> NAME`` to ``--<stage>.name NAME`` and inline normalised configs; return the new argv
    and the merged view of chosen names (classifier and stages)."""
    chosen: dict[str, Any] = {}
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        key, eq, val = arg.partition("=")
        if key in ("--config", "-c"):
            value = val if eq else (argv[i + 1] if i + 1 < len(argv) else None)
            if value is None:
                raise CLIError("--config needs a file")
            value = _find_config(value)
            data = _normalise_config(_load_yaml(value))
            for k in ("classifier", *STAGES):
                if k in data:
                    chosen[k] = data[k]["name"] if isinstance(data[k], dict) and k in STAGES else data[k]
            out += ["--config", yaml.safe_dump(data, sort_keys=False)]
            i += 1 if eq else 2
            continue
        bare = key[2:] if key.startswith("--") else ""
        if bare.endswith(".name") and bare[:-5] in STAGES:  # --clusterer.name kmeans is --clusterer kmeans
            bare = bare[:-5]
        if bare in STAGES or bare == "classifier":
            value = val if eq else (argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None)
            if value is None:
                raise CLIError(f"--{bare} needs a plugin name (see anomaly-cluster list)")
            chosen[bare] = value
            out += [f"--{bare}.name" if bare in STAGES else "--classifier", value]
            i += 1 if eq else 2
            continue
        out.append(arg)
        i += 1
    return out, chosen


def _default_localizer() -> str:
    from . import registry

    info = registry.discover()["localizer"].get(DEFAULT_LOCALIZER)
    return DEFAULT_LOCALIZER if info is not None and info.ok else FALLBACK_LOCALIZER


def _resolve_parts(chosen: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """Stage name + preset option defaults per stage, from --classifier and the explicit stage choices."""
    from . import registry

    classifier = chosen.get("classifier") or DEFAULT_CLASSIFIER
    preset = registry.get_plugin("classifier", classifier)
    parts = preset.parts()
    parts["localizer"] = {"name": _default_localizer()}
    for stage in STAGES:
        if stage in chosen and chosen[stage] and chosen[stage] != parts[stage]["name"]:
            parts[stage] = {"name": chosen[stage]}
    return classifier, parts


def build_fit_parser(chosen: dict[str, Any], command: str = "fit"):
    """The jsonargparse parser of ``fit`` for the chosen plugins (their options included)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    from . import registry

    classifier, parts = _resolve_parts(chosen)
    p = ArgumentParser(prog=f"anomaly-cluster {command}", description=COMMANDS[command], exit_on_error=False, default_env=False)
    p.add_argument("-c", "--config", action=ActionConfigFile, help="YAML config file (or a bundled one: blind-lca, ncd, …)")
    p.add_argument("--data", type=str, required=command == "fit", help="folder of images (searched recursively)")
    p.add_argument("--include", nargs="+", type=str, default=[], help="glob patterns of image paths to keep (relative to --data)")
    p.add_argument("--exclude", nargs="+", type=str, default=[], help="glob patterns of image paths to leave out")
    p.add_argument("--normal_dir", "--normal-dir", type=str | None, default=None, help="optional folder of defect-free reference images")
    p.add_argument("--run", type=str, default="runs/latest", help="run folder to write")
    p.add_argument("--classifier", type=str, default=classifier, help="preset of binarizer + representation + clusterer")
    p.add_argument("--n_clusters", "--n-clusters", type=int | str, default="auto", help="number of clusters, or 'auto'")
    p.add_argument("--k_min", type=int, default=2, help="smallest K tried when n_clusters is auto")
    p.add_argument("--k_max", type=int, default=10, help="largest K tried when n_clusters is auto")
    p.add_argument("--k_method", type=str, default="silhouette", help="'silhouette' or 'eigengap'")
    p.add_argument("--backbone", type=str | None, default=None, help="backbone for every stage that takes one (timm/torchvision name)")
    p.add_argument("--backbone_weights", type=str | None, default=None, help="local weights file or folder for that backbone")
    p.add_argument("--input_size", type=int | None, default=None, help="image side in pixels for every stage that takes one")
    p.add_argument("--seed", type=int | None, default=None, help="random seed for every stage (default: each plugin's own seed; global RNGs 0)")
    p.add_argument("--device", type=str, default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 …")
    p.add_argument("--cache_dir", type=str | None, default=None, help="stage cache folder (default: <run>/cache)")
    p.add_argument("--accelerator", type=str, default="auto", help="Lightning accelerator for a multi-process run: auto, cpu, gpu")
    p.add_argument("--devices", type=int | str, default=1, help="processes (devices) per node, Lightning-style: 2, 'auto', '0,1'")
    p.add_argument("--num_nodes", "--num-nodes", type=int, default=1, help="nodes of a multi-node run (torchrun / SLURM)")
    p.add_argument("--strategy", type=str, default="auto", help="Lightning strategy of a multi-process run, e.g. ddp")
    p.add_argument("--strict", type=bool, nargs="?", const=True, default=False, help="an unreadable image is an error instead of a warning")
    p.add_argument("--save_pngs", type=bool, nargs="?", const=True, default=True, help="write heat-map and mask PNGs at each image's size")
    p.add_argument("--quiet", type=bool, nargs="?", const=True, default=False, help="no progress bars or stage log")
    for stage in STAGES:
        name = parts[stage]["name"]
        cls = registry.get_plugin(stage, name)
        p.add_argument(f"--{stage}.name", type=str, default=name, help=f"{stage} plugin (see anomaly-cluster list)")
        p.add_class_arguments(cls, nested_key=stage, skip={"n_clusters"}, fail_untyped=False, sub_configs=True)
        defaults = {f"{stage}.{k}": v for k, v in parts[stage].items() if k != "name"}
        if defaults:
            p.set_defaults(defaults)
    return p


def _namespace_to_spec(cfg: Any, stage: str) -> tuple[str, dict[str, Any]]:
    d = cfg[stage].as_dict() if hasattr(cfg[stage], "as_dict") else dict(cfg[stage])
    name = d.pop("name")
    return name, d


def _plugin_defaults(stage: str, name: str) -> dict[str, Any]:
    import inspect

    from . import registry

    cls = registry.get_plugin(stage, name)
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if p.default is not inspect.Parameter.empty}


def _parse(parser, argv: list[str]):
    from jsonargparse import ArgumentError

    try:
        return parser.parse_args(argv)
    except ArgumentError as exc:
        raise CLIError(_one_line(str(exc))) from None
    except SystemExit as exc:
        if exc.code:
            raise CLIError("invalid arguments") from None
        raise


def _one_line(msg: str) -> str:
    lines = [l.strip() for l in str(msg).splitlines() if l.strip()]
    if not lines:
        return "invalid arguments"
    first = lines[0]
    for extra in lines[1:3]:
        if len(first) < 160 and not extra.startswith("-"):
            first += " " + extra
    return first


def _pipeline_config(cfg: Any):
    from .pipeline import PipelineConfig, StageSpec

    specs = {}
    shared = {"backbone": cfg.backbone, "backbone_weights": cfg.backbone_weights, "input_size": cfg.input_size, "seed": cfg.seed}
    for stage in STAGES:
        name, opts = _namespace_to_spec(cfg, stage)
        defaults = _plugin_defaults(stage, name)
        for key, value in shared.items():  # a shared setting fills a stage option the user left at its default
            if value is not None and key in opts and opts[key] == defaults.get(key):
                opts[key] = value
        specs[stage] = StageSpec(name, opts)
    n_clusters = cfg.n_clusters
    if isinstance(n_clusters, str) and n_clusters != "auto":
        try:
            n_clusters = int(n_clusters)
        except ValueError:
            raise CLIError(f"--n_clusters {n_clusters}: give a positive integer or 'auto'") from None
    return PipelineConfig(
        specs["localizer"], specs["binarizer"], specs["representation"], specs["clusterer"],
        n_clusters=n_clusters, k_min=cfg.k_min, k_max=cfg.k_max, k_method=cfg.k_method, seed=cfg.seed if cfg.seed is not None else 0,
        shared={k: v for k, v in shared.items() if v is not None},
    )


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
    from . import registry

    for stage in STAGES:  # fail on bad plugin options before any work
        spec = pconf.spec(stage)
        registry.create(stage, spec.name, **spec.options)
    dist = DistributedConfig(cfg.accelerator, cfg.devices, cfg.num_nodes, cfg.strategy)
    device = cfg.device
    if not dist.is_multi_process and cfg.accelerator not in ("auto", None) and device == "auto":
        device = {"gpu": "cuda"}.get(cfg.accelerator, cfg.accelerator)
    fabric = launch(dist)  # several processes: from here on, this runs once per rank
    main = fabric is None or fabric.global_rank == 0
    images = load_image_set(cfg.data, cfg.include, cfg.exclude, strict=cfg.strict)
    normal = load_image_set(cfg.normal_dir, strict=cfg.strict) if cfg.normal_dir else None
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

    from . import runtime
    from .data import load_image_set
    from .runs import RunFolder, write_predictions

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
    reject = _reject_quantile(cfg.reject)
    run = RunFolder.open(cfg.run)
    images = load_image_set(cfg.data, cfg.include, cfg.exclude, strict=cfg.strict)
    conf = run.config
    cache = conf.get("cache_dir") or str(run.path / "cache")
    comps = {k: run.component(k) for k in STAGES}
    if not getattr(comps["clusterer"], "supports_predict", True):
        raise CLIError(f"--run {cfg.run}: clusterer {conf['clusterer']['name']!r} cannot assign new images")
    if not getattr(comps["representation"], "supports_new_images", True):
        raise CLIError(f"--run {cfg.run}: representation {conf['representation']['name']!r} cannot embed new images; fit again with them included")
    with runtime.settings(device=cfg.device, quiet=cfg.quiet, cache_dir=cache, seed=conf.get("seed") or 0):
        maps = comps["localizer"].predict(images)
        regions = comps["binarizer"].transform(maps, images)
        emb = comps["representation"].transform(images, maps, regions)
        clustering = comps["clusterer"].predict(emb)
    out = write_predictions(cfg.output or run.path / "predictions", images, maps, regions, clustering, cfg.save_pngs)
    counts = _open_set_hook(run.path, images, emb, clustering, reject, out / "predictions.csv")
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
    cfg = _parse(p, argv)
    test = make_example_set(cfg.folder, cfg.per_kind, cfg.n_good, cfg.size, cfg.seed)
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
    print(f"warning: {message}", file=sys.stderr)


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

    warnings.showwarning = _warning_line
    warnings.filterwarnings("ignore", module="lightning")
    user_errors = (CLIError, DataError, PipelineError, PluginError, MissingWeightsError, BackboneConfigError, StoreError, RunLockedError, DistributedConfigError)
    try:
        return HANDLERS[command](rest) or 0
    except user_errors as exc:
        print(f"anomaly-cluster {command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        if getattr(exc, "errno", None) == 28:  # ENOSPC
            print(f"anomaly-cluster {command}: error: disk full ({exc.filename or ''}); free space and rerun: completed stages are kept", file=sys.stderr)
            return 3
        raise
    except SystemExit as exc:  # --help and --print_config finish early: return their code like every command
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print(f"anomaly-cluster {command}: interrupted; rerun the same command to resume from the cached stages", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

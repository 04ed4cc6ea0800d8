"""What a run is: the pipeline configuration and the one rule that builds it from a preset, plugin options and the
shared settings — used alike by the Python API (:mod:`anomaly_clustering.api`), the CLI and the benchmark.

The merge rule (:func:`resolve_config`), per stage, later steps winning:

1. the plugin's name: given for the stage, else the classifier preset's part (the localizer: ``fca-vae-frame``, or
   ``color-stats`` when FCA cannot load);
2. the preset's options for that part, when the stage keeps the preset's plugin;
3. the options given for the stage (``--representation.epochs 2``, ``representation__epochs=2``, a YAML mapping);
4. a shared setting (``backbone``, ``backbone_weights``, ``input_size``, ``seed``) fills every option of that name
   the plugin takes and that steps 2–3 left absent or at the plugin's own default (:func:`merge_stage_options`).

The command-line parser lives here too (two passes: the first finds which plugins were chosen, on the command line or
in ``--config`` files, the second adds their options from each plugin's ``__init__`` signature), so that ``cli`` is
a thin layer and ``benchmarking`` can build the same configuration without importing ``cli``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

__all__ = [
    "STAGES", "SHARED_OPTIONS", "DEFAULT_CLASSIFIER", "DEFAULT_STABILITY_RESAMPLES", "ConfigError", "StageSpec", "PipelineConfig",
    "resolve_config", "merge_stage_options", "check_plugins", "prescan", "build_fit_parser", "parse_args", "config_from_namespace",
]

STAGES = ("localizer", "binarizer", "representation", "clusterer")
#: Options every stage with such a parameter inherits from the top-level settings unless given per stage.
SHARED_OPTIONS = ("backbone", "backbone_weights", "input_size", "seed")
DEFAULT_LOCALIZER = "fca-vae-frame"  # fca-vae's maps (three VAEs) over the whole image; scores and the views read its interior
FALLBACK_LOCALIZER = "color-stats"
DEFAULT_CLASSIFIER = "multiview-all-normal-first"
DEFAULT_STABILITY_RESAMPLES = 10  # refits of the clusterer that measure its stability (:mod:`.stability`)

FIT_COMMAND_HELP = "localize, binarize, represent and cluster a folder of images; writes a run folder"


class ConfigError(ValueError):
    """A user error in the options (a bad value, a missing file): printed by the CLI as one line, exit code 2."""


@dataclass(frozen=True)
class StageSpec:
    """A plugin name and its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that determines a run's result."""

    localizer: StageSpec
    binarizer: StageSpec
    representation: StageSpec
    clusterer: StageSpec
    n_clusters: int | str = "auto"
    k_min: int = 2
    k_max: int = 10
    k_method: str = "auto"
    seed: int = 0
    shared: dict[str, Any] = field(default_factory=dict)
    stability_resamples: int = DEFAULT_STABILITY_RESAMPLES  # refits on random subsets after the clusterer (0: none; :mod:`.stability`)

    def spec(self, stage: str) -> StageSpec:
        return getattr(self, stage)


# ------------------------------------------------------------------------------------------------ the merge rule
def plugin_defaults(stage: str, name: str) -> dict[str, Any]:
    """The defaults of a plugin's ``__init__`` parameters."""
    from . import registry

    cls = registry.get_plugin(stage, name)
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if p.default is not inspect.Parameter.empty}


def merge_stage_options(stage: str, name: str, options: Mapping[str, Any], shared: Mapping[str, Any], n_clusters: int | str = "auto") -> dict[str, Any]:
    """Step 4 of the merge rule: the stage's options with each shared setting filled in where the plugin takes it
    and the option is absent or at the plugin's default; a given integer ``n_clusters`` reaches the later stages."""
    from . import registry

    cls = registry.get_plugin(stage, name)
    params = inspect.signature(cls.__init__).parameters
    defaults = plugin_defaults(stage, name)
    opts = dict(options)
    for key in SHARED_OPTIONS:
        value = shared.get(key)
        if value is not None and key in params and (key not in opts or opts[key] == defaults.get(key, inspect.Parameter.empty)):
            opts[key] = value
    if stage != "localizer" and "n_clusters" in params and isinstance(n_clusters, int):
        opts.setdefault("n_clusters", n_clusters)
    return opts


def _default_localizer() -> str:
    from . import registry

    info = registry.discover()["localizer"].get(DEFAULT_LOCALIZER)
    return DEFAULT_LOCALIZER if info is not None and info.ok else FALLBACK_LOCALIZER


def preset_parts(classifier: str | None) -> dict[str, dict[str, Any]]:
    """Steps 1–2 without user choices: the four stages as ``{"name": ..., **options}`` from a classifier preset."""
    from . import registry

    parts = registry.get_plugin("classifier", classifier or DEFAULT_CLASSIFIER).parts()
    parts["localizer"] = {"name": _default_localizer()}
    return parts


def _as_part(value: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    return {"name": value} if isinstance(value, str) else dict(value)


def _n_clusters(value: int | str) -> int | str:
    if isinstance(value, str) and value != "auto":
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"--n_clusters {value}: give a positive integer or 'auto'") from None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"--n_clusters {value!r}: give a positive integer or 'auto'")
    return value


def resolve_config(
    classifier: str | None = None,
    *,
    localizer: str | Mapping[str, Any] | None = None,
    binarizer: str | Mapping[str, Any] | None = None,
    representation: str | Mapping[str, Any] | None = None,
    clusterer: str | Mapping[str, Any] | None = None,
    n_clusters: int | str = "auto",
    k_min: int = 2,
    k_max: int = 10,
    k_method: str = "auto",
    backbone: str | None = None,
    backbone_weights: str | None = None,
    input_size: int | None = None,
    seed: int | None = None,
    stability_resamples: int = DEFAULT_STABILITY_RESAMPLES,
) -> PipelineConfig:
    """The :class:`PipelineConfig` of a classifier preset, per-stage choices (a plugin name or a mapping
    ``{"name": ..., option: value}``; a mapping without ``name`` keeps the preset's plugin) and shared settings,
    by the merge rule of this module's docstring; ``stability_resamples`` refits measure the clusters' stability."""
    shared = {k: v for k, v in dict(backbone=backbone, backbone_weights=backbone_weights, input_size=input_size, seed=seed).items() if v is not None}
    n_clusters = _n_clusters(n_clusters)
    parts = preset_parts(classifier)
    given = dict(localizer=localizer, binarizer=binarizer, representation=representation, clusterer=clusterer)
    specs = {}
    for stage in STAGES:
        mine = _as_part(given[stage])
        name = mine.pop("name", None) or parts[stage]["name"]
        base = {k: v for k, v in parts[stage].items() if k != "name"} if name == parts[stage]["name"] else {}
        specs[stage] = StageSpec(name, merge_stage_options(stage, name, {**base, **mine}, shared, "auto"))
    return PipelineConfig(
        specs["localizer"], specs["binarizer"], specs["representation"], specs["clusterer"],
        n_clusters=n_clusters, k_min=k_min, k_max=k_max, k_method=k_method, seed=seed if seed is not None else 0, shared=shared,
        stability_resamples=stability_resamples,
    )


def check_plugins(config: PipelineConfig) -> None:
    """Instantiate every stage once and check its ``parameter_constraints`` (and its own ``_validate()``, for plugins
    that check their parameters in one), so that an unknown plugin, an unknown option or an invalid value fails
    before any work."""
    from . import registry
    from .validation import validate_params

    for stage in STAGES:
        spec = config.spec(stage)
        try:
            component = registry.create(stage, spec.name, **merge_stage_options(stage, spec.name, spec.options, config.shared, config.n_clusters))
            validate_params(component)
            own_check = getattr(component, "_validate", None)
            if callable(own_check):
                own_check()
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"--{stage} {spec.name}: {exc}") from None


# ---------------------------------------------------------------------------------------------- command line
def _load_yaml(value: str) -> dict[str, Any]:
    """A --config value: a YAML file path (or a YAML/JSON string, as jsonargparse accepts)."""
    p = Path(value)
    try:
        if p.exists():
            data = yaml.safe_load(p.read_text())
        elif value.lstrip().startswith("{") or ":" in value:
            data = yaml.safe_load(value)
        else:
            raise ConfigError(f"--config {value}: no such file")
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {value}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {value}: expected a mapping of options at the top level")
    return data


def find_config(name: str) -> str:
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


def _option_value(argv: list[str], i: int, eq: str, val: str, bare_value: bool) -> str | None:
    if eq:
        return val
    if i + 1 < len(argv) and (not bare_value or not argv[i + 1].startswith("--")):
        return argv[i + 1]
    return None


def prescan(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Rewrite ``--<stage> NAME`` to ``--<stage>.name NAME`` and inline normalised configs; return the new argv
    and the merged view of chosen names (classifier and stages)."""
    chosen: dict[str, Any] = {}
    out: list[str] = []
    i = 0
    while i < len(argv):
        key, eq, val = argv[i].partition("=")
        bare = key[2:] if key.startswith("--") else ""
        if bare.endswith(".name") and bare[:-5] in STAGES:  # --clusterer.name kmeans is --clusterer kmeans
            bare = bare[:-5]
        if key in ("--config", "-c"):
            value = _option_value(argv, i, eq, val, bare_value=False)
            if value is None:
                raise ConfigError("--config needs a file")
            data = _normalise_config(_load_yaml(find_config(value)))
            chosen.update({k: data[k]["name"] if isinstance(data[k], dict) and k in STAGES else data[k] for k in ("classifier", *STAGES) if k in data})
            out += ["--config", yaml.safe_dump(data, sort_keys=False)]
        elif bare in STAGES or bare == "classifier":
            value = _option_value(argv, i, eq, val, bare_value=True)
            if value is None:
                raise ConfigError(f"--{bare} needs a plugin name (see anomaly-cluster list)")
            chosen[bare] = value
            out += [f"--{bare}.name" if bare in STAGES else "--classifier", value]
        else:
            out.append(argv[i])
            i += 1
            continue
        i += 1 if eq else 2
    return out, chosen


def _chosen_parts(chosen: Mapping[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """Stage name + preset option defaults per stage, from --classifier and the explicit stage choices."""
    classifier = chosen.get("classifier") or DEFAULT_CLASSIFIER
    parts = preset_parts(classifier)
    for stage in STAGES:
        if chosen.get(stage) and chosen[stage] != parts[stage]["name"]:
            parts[stage] = {"name": chosen[stage]}
    return classifier, parts


_SHARED_HELP = {
    "backbone": (str | None, "backbone for every stage that takes one (timm/torchvision name)"),
    "backbone_weights": (str | None, "local weights file or folder for that backbone"),
    "input_size": (int | None, "image side in pixels for every stage that takes one"),
    "seed": (int | None, "random seed for every stage (default: each plugin's own seed; global RNGs 0)"),
}


def _add_run_arguments(p: Any, command: str, classifier: str) -> None:
    p.add_argument("--data", type=str, required=command == "fit", help="folder of images (searched recursively)")
    p.add_argument("--include", nargs="+", type=str, default=[], help="glob patterns of image paths to keep (relative to --data)")
    p.add_argument("--exclude", nargs="+", type=str, default=[], help="glob patterns of image paths to leave out")
    p.add_argument("--normal_dir", "--normal-dir", type=str | None, default=None, help="optional folder of defect-free reference images")
    p.add_argument("--run", type=str, default="runs/latest", help="run folder to write")
    p.add_argument("--classifier", type=str, default=classifier, help="preset of binarizer + representation + clusterer")
    p.add_argument("--n_clusters", "--n-clusters", type=int | str, default="auto", help="number of clusters, or 'auto'")
    p.add_argument("--k_min", type=int, default=2, help="smallest K tried when n_clusters is auto")
    p.add_argument("--k_max", type=int, default=10, help="largest K tried when n_clusters is auto")
    p.add_argument("--k_method", type=str, default="auto", help="how K is estimated: 'auto' (the rule chosen on the suite) or one estimator (see anomaly_clustering.kselect.K_METHODS)")
    p.add_argument("--stability_resamples", type=int, default=DEFAULT_STABILITY_RESAMPLES, help="refits of the clusterer on random 80%% subsets that measure how stable the clusters are (0: none)")
    for name, (typ, text) in _SHARED_HELP.items():
        p.add_argument(f"--{name}", type=typ, default=None, help=text)
    p.add_argument("--device", type=str, default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 …")
    p.add_argument("--cache_dir", type=str | None, default=None, help="stage cache folder (default: <run>/cache)")
    p.add_argument("--accelerator", type=str, default="auto", help="Lightning accelerator for a multi-process run: auto, cpu, gpu")
    p.add_argument("--devices", type=int | str, default=1, help="processes (devices) per node, Lightning-style: 2, 'auto', '0,1'")
    p.add_argument("--num_nodes", "--num-nodes", type=int, default=1, help="nodes of a multi-node run (torchrun / SLURM)")
    p.add_argument("--strategy", type=str, default="auto", help="Lightning strategy of a multi-process run, e.g. ddp")
    p.add_argument("--strict", type=bool, nargs="?", const=True, default=False, help="an unreadable image is an error instead of a warning")
    p.add_argument("--save_pngs", type=bool, nargs="?", const=True, default=True, help="write heat-map and mask PNGs at each image's size")
    p.add_argument("--quiet", type=bool, nargs="?", const=True, default=False, help="no progress bars or stage log")


def build_fit_parser(chosen: Mapping[str, Any], command: str = "fit", description: str = FIT_COMMAND_HELP) -> Any:
    """The jsonargparse parser of ``fit`` for the chosen plugins (their options included)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    from . import registry

    classifier, parts = _chosen_parts(chosen)
    p = ArgumentParser(prog=f"anomaly-cluster {command}", description=description, exit_on_error=False, default_env=False)
    p.add_argument("-c", "--config", action=ActionConfigFile, help="YAML config file (or a bundled one: blind-lca, ncd, …)")
    _add_run_arguments(p, command, classifier)
    for stage in STAGES:
        name = parts[stage]["name"]
        p.add_argument(f"--{stage}.name", type=str, default=name, help=f"{stage} plugin (see anomaly-cluster list)")
        p.add_class_arguments(registry.get_plugin(stage, name), nested_key=stage, skip={"n_clusters"}, fail_untyped=False, sub_configs=True)
        defaults = {f"{stage}.{k}": v for k, v in parts[stage].items() if k != "name"}
        if defaults:
            p.set_defaults(defaults)
    return p


def one_line(msg: str) -> str:
    """An error message shortened to one line (the CLI prints user errors this way)."""
    lines = [l.strip() for l in str(msg).splitlines() if l.strip()]
    if not lines:
        return "invalid arguments"
    first = lines[0]
    for extra in lines[1:3]:
        if len(first) < 160 and not extra.startswith("-"):
            first += " " + extra
    return first


def parse_args(parser: Any, argv: list[str]) -> Any:
    """Parse with a jsonargparse parser; a bad argument is a :class:`ConfigError` with a one-line message."""
    from jsonargparse import ArgumentError

    try:
        return parser.parse_args(argv)
    except ArgumentError as exc:
        raise ConfigError(one_line(str(exc))) from None
    except SystemExit as exc:
        if exc.code:
            raise ConfigError("invalid arguments") from None
        raise


def _stage_part(cfg: Any, stage: str) -> dict[str, Any]:
    return cfg[stage].as_dict() if hasattr(cfg[stage], "as_dict") else dict(cfg[stage])


def config_from_namespace(cfg: Any) -> PipelineConfig:
    """The :class:`PipelineConfig` of parsed ``fit`` options, through :func:`resolve_config`."""
    return resolve_config(
        cfg.classifier, **{stage: _stage_part(cfg, stage) for stage in STAGES},
        n_clusters=cfg.n_clusters, k_min=cfg.k_min, k_max=cfg.k_max, k_method=cfg.k_method,
        stability_resamples=getattr(cfg, "stability_resamples", DEFAULT_STABILITY_RESAMPLES),
        **{k: getattr(cfg, k) for k in SHARED_OPTIONS},
    )


def config_from_args(argv: list[str]) -> tuple[PipelineConfig, Any]:
    """``fit``-style arguments (``["--localizer", "fca", "--seed", "1", ...]``) → (config, the parsed namespace)."""
    argv, chosen = prescan(list(argv))
    cfg = parse_args(build_fit_parser(chosen), argv)
    return config_from_namespace(cfg), cfg

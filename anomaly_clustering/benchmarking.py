"""``anomaly-cluster benchmark``: localizers × classifiers over labelled sets, one table (thin first version)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["benchmark_main"]


def benchmark_main(argv: list[str]) -> int:
    from jsonargparse import ArgumentParser

    from .cli import CLIError, _parse, main as cli_main
    from .evaluation import evaluate_run

    p = ArgumentParser(prog="anomaly-cluster benchmark", exit_on_error=False)
    p.add_argument("--data", type=list[str], required=True, help="labelled sets (MVTec layout folders)")
    p.add_argument("--localizers", type=str, default="fca", help="comma-separated localizer names")
    p.add_argument("--classifiers", type=str, default="average", help="comma-separated classifier names")
    p.add_argument("--n_clusters", type=int | str, default="auto")
    p.add_argument("--out", type=str, default="runs/benchmark")
    p.add_argument("--quiet", type=bool, default=True)
    cfg = _parse(p, argv)
    rows = []
    for data in cfg.data:
        for loc in cfg.localizers.split(","):
            for clf in cfg.classifiers.split(","):
                run = Path(cfg.out) / Path(data).name / f"{loc}__{clf}"
                code = cli_main(["fit", "--data", data, "--localizer", loc, "--classifier", clf, "--n_clusters", str(cfg.n_clusters), "--run", str(run), "--cache_dir", str(Path(cfg.out) / "cache"), "--quiet", str(cfg.quiet).lower(), "--save_pngs", "false"])
                if code:
                    raise CLIError(f"benchmark: fit failed for {data} {loc} {clf}")
                r = evaluate_run(str(run))
                rows.append({"data": data, "localizer": loc, "classifier": clf, **r["clustering"], **{k: v for k, v in r["localization"].items() if k != "masks"}})
    print("| data | localizer | classifier | NMI | ARI | F1 | PRO@0.3 | AUROC-px | AUROC-img |")
    print("|---|---|---|---|---|---|---|---|---|")
    f = lambda v: "—" if v is None else f"{v:.3f}"
    for r in rows:
        print(f"| {Path(r['data']).name} | {r['localizer']} | {r['classifier']} | {f(r['nmi'])} | {f(r['ari'])} | {f(r['f1_micro'])} | {f(r['pro_30'])} | {f(r['auroc_pixel'])} | {f(r['auroc_image'])} |")
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "results.json").write_text(json.dumps(rows, indent=1))
    return 0

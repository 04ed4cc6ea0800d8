"""Bit-for-bit check of the three training loops (the ``fca-vae`` VAE, the contrastive head, MGViT-NCD) across a
change of the training code: run each on small generated data with fixed seeds on the CPU, save what it learned
and what it outputs, and compare with a saved file.

    python benchmarks/training_equality.py --save before.npz      # on the old code
    python benchmarks/training_equality.py --compare before.npz   # on the new code: exit 1 unless every array matches

Saved per case: the outputs (VAE anomaly maps, head embeddings, MGViT probabilities), the learned weights and the
loss curves. ``--atol 0`` (default) asks for exact equality.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def _state(prefix: str, module_state: dict) -> dict[str, np.ndarray]:
    return {f"{prefix}/state/{k}": v.detach().cpu().numpy() for k, v in module_state.items()}


def run_cases(root: Path) -> dict[str, np.ndarray]:
    """Every case's arrays, keyed ``case/what``."""
    from anomaly_clustering import runtime
    from anomaly_clustering.data import load_image_set
    from anomaly_clustering.examples import make_example_set
    from anomaly_clustering.plugins.blind_lca.contrastive import ContrastiveHead
    from anomaly_clustering.plugins.blind_lca.localizer import FCAVAELocalizer
    from anomaly_clustering.plugins.ncd.representation import MGViTNCD
    from anomaly_clustering.testing import example_maps, example_regions

    data = make_example_set(root / "set", per_kind=3, n_good=2, size=64, seed=0)
    base = make_example_set(root / "base", per_kind=2, n_good=1, size=64, seed=11).parent
    images = load_image_set(str(data))
    maps = example_maps(images, size=32, seed=0)
    regions = example_regions(maps)
    out: dict[str, np.ndarray] = {}
    with runtime.settings(quiet=True, device="cpu", cache_dir=str(root / "cache")):
        vae = FCAVAELocalizer(input_size=64, vae_iterations=40, vae_batch_pixels=128, seed=5)
        vmaps = vae.fit_predict(images)
        out["vae/maps"] = vmaps.maps
        out["vae/loss"] = np.array([vae.loss_first_, vae.loss_last_])
        out.update(_state("vae", vae.vae_.state_dict()))

        for name, extra in {"head": {}, "head_threshold": {"threshold": 0.3, "batch_size": 3, "bank_memory_mb": 0}}.items():
            head = ContrastiveHead(input_size=64, epochs=3, seed=1, **extra)
            emb = head.fit_transform(images, maps, regions)
            out[f"{name}/embeddings"] = emb.vectors
            out[f"{name}/loss"] = np.array(head.loss_history_)
            out.update(_state(name, head.head_.state_dict()))

        cases = {
            "mgvit_cached": {"cache_views": True},
            "mgvit_uncached": {"cache_views": False},
            "mgvit_base": {"cache_views": True, "base_dir": str(base)},
        }
        for name, extra in cases.items():
            rep = MGViTNCD(n_clusters=3, epochs=2, repeats=2, batch_size=5, input_size=64, width=32, depth=1,
                           n_views=3, lr=0.05, seed=2, **extra)
            emb = rep.fit_transform(images, maps, regions)
            out[f"{name}/probabilities"] = emb.vectors
            out[f"{name}/loss"] = np.array(rep.history_)
            out[f"{name}/best_head"] = np.array(rep.best_head_)
            out.update(_state(name, rep.state_))
    return out


def compare(saved: dict[str, np.ndarray], now: dict[str, np.ndarray], atol: float) -> list[str]:
    """One line per key that differs (missing, shape, or values beyond ``atol``)."""
    problems = [f"{k}: missing now" for k in saved if k not in now] + [f"{k}: new" for k in now if k not in saved]
    for k in sorted(set(saved) & set(now)):
        a, b = saved[k], now[k]
        if a.shape != b.shape:
            problems.append(f"{k}: shape {a.shape} → {b.shape}")
        elif a.size and (diff := float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))) > atol:
            problems.append(f"{k}: max |Δ| = {diff:.3g}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--save", type=Path, help="write the arrays to this .npz")
    action.add_argument("--compare", type=Path, help="compare with this .npz")
    parser.add_argument("--atol", type=float, default=0.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="training-equality-") as tmp:
        now = run_cases(Path(tmp))
    if args.save:
        np.savez(args.save, **now)
        print(f"saved {len(now)} arrays to {args.save}")
        return 0
    with np.load(args.compare) as f:
        saved = {k: f[k] for k in f.files}
    problems = compare(saved, now, args.atol)
    print("\n".join(problems) if problems else f"all {len(now)} arrays equal (atol {args.atol})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

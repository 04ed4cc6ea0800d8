"""The anomaly crop described by what differs from normal there: each patch less its nearest patch in the crops of
the images the binarizer left empty (``crop_variants.py``'s ``residual`` variants).

The default's crop view pools the backbone's channels over a square around the map's peak; most of that square is the
image's own background (a board's traces, a tile's grain), which varies between images more than the defect does. A
patch's nearest neighbour among the crops of normal-looking images is what that patch would look like without the
defect; the difference (the *residual*) keeps what the defect changed (copper added or missing, a dark hole, a bright
crack) and cancels the background. Per image the residuals are pooled with weights proportional to their length, so
the patches that differ most, the defect's, dominate.
"""

from __future__ import annotations

import numpy as np
import torch

MAX_BANK_IMAGES = 256  # per half: the exact search stays linear in the set beyond ~500 normal-looking images


@torch.no_grad()
def crop_patch_features(images, boxes: np.ndarray, spec, batch: int = 16) -> list[np.ndarray]:
    """Per stage of ``spec``, the N×P×C patch features of every image's crop (P = the stage's grid cells)."""
    from anomaly_clustering import runtime
    from anomaly_clustering.backbones import get_backbone
    from anomaly_clustering.plugins.multiview.views import crop_batch

    backbone = get_backbone(spec).to(runtime.device())
    per_stage: list[list[np.ndarray]] = []
    for s in range(0, len(boxes), batch):
        x = crop_batch(images.paths[s:s + batch], boxes[s:s + batch], spec.input_size).to(runtime.device())
        for j, st in enumerate(backbone.forward_layers(x)):
            if len(per_stage) <= j:
                per_stage.append([])
            per_stage[j].append(st.float().flatten(2).transpose(1, 2).cpu().numpy())
    return [np.ascontiguousarray(np.concatenate(p), np.float32) for p in per_stage]


def _nearest(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Each query row's nearest bank row (exact L2, faiss)."""
    import faiss

    index = faiss.IndexFlatL2(bank.shape[1])
    index.add(bank)
    _, idx = index.search(queries, 1)
    return bank[idx[:, 0]]


def reference_halves(has_region: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sets of reference images among those without a region (every image if fewer than 4), each at most
    :data:`MAX_BANK_IMAGES`: an image in one half is compared with the other, so no image is its own reference."""
    ref = np.flatnonzero(~has_region) if (~has_region).sum() >= 4 else np.arange(len(has_region))
    ref = np.random.default_rng(seed).permutation(ref)
    a, b = ref[0::2][:MAX_BANK_IMAGES], ref[1::2][:MAX_BANK_IMAGES]
    return a, b


def patch_residuals(feats: np.ndarray, has_region: np.ndarray, seed: int = 0) -> np.ndarray:
    """N×P×C: every patch less its nearest patch in the reference crops (the half that does not hold the image)."""
    n, p, c = feats.shape
    a, b = reference_halves(has_region, seed)
    in_a = np.zeros(n, bool)
    in_a[a] = True
    out = np.empty_like(feats)
    for bank_ids, query_ids in ((b, np.flatnonzero(in_a)), (a, np.flatnonzero(~in_a))):
        if len(query_ids):
            q = feats[query_ids].reshape(-1, c)
            out[query_ids] = (q - _nearest(q, feats[bank_ids].reshape(-1, c))).reshape(len(query_ids), p, c)
    return out


def pooled_residuals(feats: np.ndarray, residuals: np.ndarray, with_features: bool) -> np.ndarray:
    """Per image the length-weighted mean and std of its patches' residuals (and, ``with_features``, the same
    weighted mean of the patches' own features)."""
    norm = np.linalg.norm(residuals, axis=2, keepdims=True)
    w = norm / np.maximum(norm.sum(1, keepdims=True), 1e-12)
    mean = (w * residuals).sum(1)
    std = np.sqrt(np.clip((w * (residuals - mean[:, None]) ** 2).sum(1), 0.0, None))
    parts = [mean, std] + ([(w * feats).sum(1)] if with_features else [])
    return np.concatenate(parts, 1)


def residual_crop_view(images, boxes: np.ndarray, has_region: np.ndarray, spec, with_features: bool = False, seed: int = 0) -> np.ndarray:
    """N×D: the crop view described by its residuals against the normal-looking images' crops, stage by stage."""
    stages = crop_patch_features(images, boxes, spec)
    return np.concatenate([pooled_residuals(f, patch_residuals(f, has_region, seed), with_features) for f in stages], 1).astype(np.float32)

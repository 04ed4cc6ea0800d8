"""MuSc as a Localizer: every image is scored against all the others, no training and no clean images needed."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from anomaly_clustering import runtime
from anomaly_clustering.backbones import DEFAULT_BACKBONE, FeatureSpec, extract_features
from anomaly_clustering.data import image_size
from anomaly_clustering.interfaces import Localizer
from anomaly_clustering.records import AnomalyMaps, ImageSet
from anomaly_clustering.validation import check_is_fitted

from .torch_model import DEFAULT_MAX_ELEMENTS, layer_norm_map, lnamd, mutual_scores, rscin


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return maps
    radius = int(4 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).to(maps.device)
    m = maps.unsqueeze(1)
    m = F.conv2d(F.pad(m, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    m = F.conv2d(F.pad(m, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))
    return m.squeeze(1)


class MuScLocalizer(Localizer):
    """MuSc zero-shot mutual scoring: each patch vs. its nearest patches in all other images (Li et al., 2024).

    Patch features of several CNN layers (the shared extractor, cached on disk) are LayerNorm-ed and aggregated
    over r×r neighbourhoods (LNAMD, r in ``degrees``); a patch's score is the mean of its smallest ``interval``
    fraction of nearest-patch distances to the *other* images; scores are averaged over layers and r, upsampled,
    smoothed (``sigma``), and the image score is the map's max (``rescore``: RsCIN k-NN smoothing of the image
    scores). The paper uses a CLIP ViT-L/14; this uses any CNN backbone of anomaly_clustering.backbones.

    Learned state: the reference patch features (LayerNorm-ed, float16, at most ``max_reference_images`` images,
    a random subset beyond that) so that ``predict`` can score new images against the fitted set; they are pickled
    with the run (≈ N·Σ C·h·w·2 bytes: 200 images of 256 px with tf_efficientnet_lite0 ≈ 28 MB). With
    ``normal_images`` the reference is those clean images instead of the set itself ("reference" mode).
    """

    uses_global_rng: ClassVar[bool] = False  # deterministic; the reference subsample is seeded from its own seed

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        backbone_weights: str | None = None,
        input_size: int = 256,
        layers: tuple[str, ...] = (),
        degrees: tuple[int, ...] = (1, 3, 5),
        interval: float = 0.3,
        sigma: float = 4.0,
        rescore: bool = False,
        max_reference_images: int | None = 400,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
        seed: int = 0,
    ):
        self.backbone = backbone
        self.backbone_weights = backbone_weights
        self.input_size = input_size
        self.layers = layers
        self.degrees = degrees
        self.interval = interval
        self.sigma = sigma
        self.rescore = rescore
        self.max_reference_images = max_reference_images
        self.max_elements = max_elements
        self.seed = seed

    # -- features -------------------------------------------------------------------------------------------
    def _specs(self) -> list[FeatureSpec]:
        base = FeatureSpec(self.backbone or DEFAULT_BACKBONE, (), self.input_size, self.backbone_weights)
        layers = tuple(str(x) for x in self.layers) or base.resolved_layers()
        return [FeatureSpec(base.backbone, (layer,), self.input_size, self.backbone_weights) for layer in layers]

    def _layer_features(self, images: ImageSet) -> list[torch.Tensor]:
        """Per layer: N×C×h×w LayerNorm-ed features, float16 on the CPU (from the shared on-disk cache)."""
        out = []
        for spec in self._specs():
            feats = extract_features(images, spec)
            chunks = [
                layer_norm_map(feats.batch(list(range(s, min(len(feats), s + 64))))).half()
                for s in range(0, len(feats), 64)
            ]
            out.append(torch.cat(chunks))
        return out

    # -- Localizer API ----------------------------------------------------------------------------------------
    def fit(self, images: ImageSet, normal_images: ImageSet | None = None) -> "MuScLocalizer":
        reference = normal_images if normal_images is not None and len(normal_images) else images
        keep = np.arange(len(reference))
        if self.max_reference_images and len(reference) > self.max_reference_images:
            rng = np.random.default_rng(self.seed)
            keep = np.sort(rng.choice(len(reference), self.max_reference_images, replace=False))
        feats = self._layer_features(reference)
        self.reference_features_ = [f[torch.from_numpy(keep)].numpy() for f in feats]  # float16 numpy
        self.reference_digests_ = tuple(reference.digests[i] for i in keep)
        self.mode_ = "reference" if reference is not images else "mutual"
        self.backbone_used_ = self._specs()[0].backbone
        return self

    def predict(self, images: ImageSet) -> AnomalyMaps:
        check_is_fitted(self, "reference_features_")
        lookup = {d: i for i, d in enumerate(self.reference_digests_)}
        exclude = [lookup.get(d, -1) for d in images.digests]
        device = runtime.device()
        size = self.input_size
        total = torch.zeros(len(images), size, size)
        feats = self._layer_features(images)
        n_terms = 0
        for layer_idx, (query, ref) in enumerate(zip(feats, self.reference_features_)):
            ref = torch.from_numpy(ref)
            h, w = query.shape[-2:]
            for r in self.degrees:
                zq = torch.cat([lnamd(query[s : s + 64].float(), r).half() for s in range(0, len(query), 64)])
                zr = torch.cat([lnamd(ref[s : s + 64].float(), r).half() for s in range(0, len(ref), 64)])
                bar = lambda it, L=layer_idx, R=r: runtime.progress(it, desc=f"musc layer{L} r={R}", unit="block")
                s = mutual_scores(zq, zr, exclude, self.interval, self.max_elements, device, bar)
                patch = s.view(len(images), 1, h, w)
                for b in range(0, len(images), 64):
                    total[b : b + 64] += F.interpolate(patch[b : b + 64], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
                n_terms += 1
        maps = torch.cat([_gaussian_blur(total[b : b + 64] / n_terms, self.sigma) for b in range(0, len(images), 64)])
        scores = maps.flatten(1).amax(1)
        info = {"method": "musc", "mode": self.mode_, "backbone": self.backbone_used_, "degrees": list(self.degrees)}
        if self.rescore and len(images) > 1:
            deepest = feats[-1].float().mean((2, 3))
            scores = rscin(scores, deepest)
            info["rescore"] = "rscin"
        sizes = np.array([image_size(p) for p in images.paths], np.int64).reshape(len(images), 2)
        return AnomalyMaps(maps.numpy().astype(np.float32), scores.numpy().astype(np.float32), sizes, info)

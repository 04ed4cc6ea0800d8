"""anomalib's PatchCore as a Localizer, in reference mode (clean images given) or blind mode (the set itself)."""

from __future__ import annotations

import numpy as np
import torch

from anomaly_clustering import runtime
from anomaly_clustering.backbones import load_batch
from anomaly_clustering.data import image_size
from anomaly_clustering.interfaces import Localizer
from anomaly_clustering.records import AnomalyMaps, ImageSet
from anomaly_clustering.validation import check_is_fitted

from .coreset import greedy_coreset
from .generic import DEFAULT_LAYERS, build_anomalib_model, default_backbone


class PatchcoreLocalizer(Localizer):
    """PatchCore (anomalib's model, memory bank, coreset, map generator); blind mode excludes each image's own patches.

    With ``normal_images`` (CLI ``--normal_dir``) the memory bank is built from them ("reference" mode, the
    paper's setting, anomalib's own scoring incl. its neighbour re-weighting). Without, the bank is built from the
    unlabelled set itself ("blind" mode): every patch keeps the id of its image and scoring masks the query
    image's own patches in the nearest-neighbour search, so an anomaly cannot match itself.
    Backbone ``auto``: the paper's wide_resnet50_2 (layer2+layer3) when its weights are on disk, otherwise
    tf_efficientnet_lite0 (stages 2+3; weights from the PyPI package) so that it runs offline.
    The coreset is PatchCore's greedy k-center selection: ``coreset_method="fast"`` (ours, ``coreset.py``: the same
    algorithm with norm-expanded distances, 25× anomalib's steps per second on the CPU) or ``"anomalib"`` (its
    KCenterGreedy). ``seed`` fixes the coreset's random start point.
    Learned state: the coreset memory bank (float16) and its image ids; the network is rebuilt, not pickled.
    """

    def __init__(
        self,
        backbone: str = "auto",
        backbone_weights: str | None = None,
        layers: tuple[str, ...] = (),
        input_size: int = 256,
        coreset_sampling_ratio: float = 0.1,
        num_neighbors: int = 9,
        batch_size: int = 8,
        chunk_elements: int = 1 << 25,
        coreset_method: str = "fast",
        seed: int = 0,
    ):
        self.backbone = backbone
        self.backbone_weights = backbone_weights
        self.layers = layers
        self.input_size = input_size
        self.coreset_sampling_ratio = coreset_sampling_ratio
        self.num_neighbors = num_neighbors
        self.batch_size = batch_size
        self.chunk_elements = chunk_elements
        self.coreset_method = coreset_method
        self.seed = seed

    @property
    def uses_global_rng(self) -> bool:
        """Only anomalib's own coreset sampler draws from a global generator (NumPy's, in its random projection);
        the ``fast`` one is seeded from ``seed`` (see :attr:`interfaces.Localizer.uses_global_rng`)."""
        return self.coreset_method == "anomalib"

    # -- the anomalib model (rebuilt on demand, never pickled) -------------------------------------------------
    def _module(self):
        if getattr(self, "_module_cache", None) is None:
            name = default_backbone(self.backbone_weights) if self.backbone in (None, "", "auto") else self.backbone
            layers = tuple(int(x) if str(x).isdigit() else str(x) for x in self.layers) or DEFAULT_LAYERS.get(name, (2, 3))
            self._module_cache = build_anomalib_model(
                "Patchcore", name, layers, self.backbone_weights,
                coreset_sampling_ratio=self.coreset_sampling_ratio, num_neighbors=self.num_neighbors,
            )
            self._backbone_name = name
        return self._module_cache

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_module_cache", None)
        return state

    def _embed(self, images: ImageSet) -> tuple[torch.Tensor, tuple[int, int]]:
        """PatchCore's locally-aware patch embeddings of every image: N×(h·w)×C (CPU float32) and (h, w)."""
        model = self._module().model.to(runtime.device()).eval()
        out, grid = [], None
        with torch.no_grad():
            for s in runtime.progress(range(0, len(images), self.batch_size), desc="patchcore embed", unit="batch"):
                idx = list(range(s, min(len(images), s + self.batch_size)))
                x = load_batch(images, idx, self.input_size).to(runtime.device())
                feats = {k: model.feature_pooler(v) for k, v in model.feature_extractor(x).items()}
                emb = model.generate_embedding(feats)
                grid = tuple(emb.shape[-2:])
                out.append(emb.flatten(2).transpose(1, 2).float().cpu())
        return torch.cat(out), grid

    # -- Localizer API -----------------------------------------------------------------------------------------
    def fit(self, images: ImageSet, normal_images: ImageSet | None = None) -> "PatchcoreLocalizer":
        from anomalib.models.components import KCenterGreedy

        if self.coreset_method not in ("fast", "anomalib"):
            raise ValueError(f"patchcore: coreset_method must be 'fast' or 'anomalib', got {self.coreset_method!r}")
        if not 0 < self.coreset_sampling_ratio <= 1:
            raise ValueError(f"patchcore: coreset_sampling_ratio must be in (0, 1], got {self.coreset_sampling_ratio}")
        torch.manual_seed(self.seed)
        reference = normal_images if normal_images is not None and len(normal_images) else images
        self.mode_ = "reference" if reference is not images else "blind"
        emb, _ = self._embed(reference)
        bank = emb.reshape(-1, emb.shape[-1])
        ids = torch.arange(len(reference)).repeat_interleave(emb.shape[1])
        if self.coreset_sampling_ratio < 1:
            n_keep = max(1, int(len(bank) * self.coreset_sampling_ratio))
            if self.coreset_method == "fast":
                keep = greedy_coreset(bank, n_keep, seed=self.seed)
            else:
                keep = torch.as_tensor(KCenterGreedy(bank, self.coreset_sampling_ratio).select_coreset_idxs(), dtype=torch.long)
            bank, ids = bank[keep], ids[keep]
        self.memory_bank_ = bank.half().numpy()
        self.bank_image_ids_ = ids.numpy().astype(np.int32)
        self.bank_digests_ = tuple(reference.digests)
        self.backbone_used_ = self._backbone_name
        return self

    def _masked_nearest(self, emb: torch.Tensor, own: list[int]) -> torch.Tensor:
        """Distance of each patch to its nearest bank patch of *another* image (``own[i]``: the bank id of query
        image i, -1 if none), chunked so one distance block stays under ``chunk_elements``."""
        device = runtime.device()
        bank = torch.from_numpy(self.memory_bank_).to(device, torch.float32)
        ids = torch.from_numpy(self.bank_image_ids_.astype(np.int64)).to(device)
        n, p, c = emb.shape
        per = max(1, self.chunk_elements // (p * len(bank)))
        out = torch.empty(n, p)
        dist = self._module().model.euclidean_dist
        for s in runtime.progress(range(0, n, per), desc="patchcore nn", unit="chunk"):
            q = emb[s : s + per].to(device)
            d = dist(q.reshape(-1, c), bank).view(len(q), p, len(bank))
            own_ids = torch.as_tensor(own[s : s + per], device=device)
            d.masked_fill_((ids.view(1, 1, -1) == own_ids.view(-1, 1, 1)), float("inf"))
            out[s : s + per] = d.amin(-1).cpu()
        return out

    def predict(self, images: ImageSet) -> AnomalyMaps:
        check_is_fitted(self, "memory_bank_")
        lookup = {d: i for i, d in enumerate(self.bank_digests_)}
        own = [lookup.get(d, -1) for d in images.digests]
        module = self._module()
        model = module.model
        size = (self.input_size, self.input_size)
        emb, (h, w) = self._embed(images)
        if self.mode_ == "reference" and all(o < 0 for o in own):
            # anomalib's own scoring (nearest neighbour + its neighbourhood re-weighting of the image score)
            model.memory_bank = torch.from_numpy(self.memory_bank_).float().to(runtime.device())
            patch = self._masked_nearest(emb, own)
            scores = []
            with torch.no_grad():
                for s in range(0, len(images), 64):
                    e = emb[s : s + 64].to(runtime.device())
                    _, loc = model.nearest_neighbors(e.reshape(-1, e.shape[-1]), n_neighbors=1)
                    scores.append(model.compute_anomaly_score(patch[s : s + 64].to(e.device), loc.view(len(e), -1), e.reshape(-1, e.shape[-1])).cpu())
            model.memory_bank = torch.empty(0)
            score = torch.cat(scores)
        else:
            patch = self._masked_nearest(emb, own)
            score = None
        maps = []
        with torch.no_grad():
            for s in range(0, len(images), 64):
                maps.append(model.anomaly_map_generator(patch[s : s + 64].view(-1, 1, h, w), size)[:, 0].cpu())
        maps = torch.cat(maps)
        if score is None:
            score = maps.flatten(1).amax(1)
        sizes = np.array([image_size(p) for p in images.paths], np.int64).reshape(len(images), 2)
        info = {"method": "patchcore", "mode": self.mode_, "backbone": self.backbone_used_,
                "excluded_own_patches": bool(any(o >= 0 for o in own))}
        return AnomalyMaps(maps.numpy().astype(np.float32), score.numpy().astype(np.float32), sizes, info)

"""Blind-LCA's contrastive head: a 1×1 two-layer head trained on pixel pairs mined from binarized anomaly maps."""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from typing import ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anomaly_clustering import runtime, training
from anomaly_clustering.backbones import DEFAULT_BACKBONE, FeatureArray, FeatureSpec, extract_features
from anomaly_clustering.features_ops import weighted_descriptor
from anomaly_clustering.interfaces import Representation
from anomaly_clustering.records import AnomalyMaps, Embeddings, ImageSet, Regions
from anomaly_clustering.store import ShardedArrayWriter
from anomaly_clustering.validation import Interval, check_is_fitted, validate_params

from .descriptor import MAP_NORMALIZATIONS, feature_batches, maps_on_grid, masks_on_grid, normalize_maps

__all__ = ["ContrastiveHead", "ProjectionHead", "PixelBank", "PixelPools", "gather_vectors", "hadsell_loss", "image_neighbours", "sample_step"]


class ProjectionHead(nn.Module):
    """The trainable head H: 1×1 conv C→hidden, ReLU, hidden→C, L2-normalised over channels. Written as Linear
    layers on the channel axis, so it runs on a bag of sampled pixel vectors (…×C) or, via :meth:`forward_map`,
    on whole B×C×h×w maps (a 1×1 convolution)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)

    def forward_map(self, f: torch.Tensor) -> torch.Tensor:
        return self(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def hadsell_loss(pos_pairs: list[tuple[torch.Tensor, torch.Tensor]], neg_pairs: list[tuple[torch.Tensor, torch.Tensor]], margin: float = 0.5) -> torch.Tensor:
    """Hadsell et al.'s contrastive loss on unit vectors, d = squared Euclidean distance over all pairs of two sets:
    mean(d) over the positive pairs + mean(relu(margin − d)) over the negative pairs. Empty sets are skipped."""
    terms = []
    pos = [torch.cdist(a, b).pow(2).flatten() for a, b in pos_pairs if len(a) and len(b)]
    neg = [F.relu(margin - torch.cdist(a, b).pow(2)).flatten() for a, b in neg_pairs if len(a) and len(b)]
    if pos:
        terms.append(torch.cat(pos).mean())
    if neg:
        terms.append(torch.cat(neg).mean())
    if not terms:
        return torch.zeros((), requires_grad=True)
    return torch.stack(terms).sum()


def image_neighbours(descriptors: np.ndarray, k: int = 3) -> tuple[np.ndarray, list[np.ndarray]]:
    """k nearest images by descriptor (similarity = −mean squared difference) and, per image, the "far half":
    images whose similarity is at or below the 0.5-quantile of its ranking (the counter-image candidates)."""
    d = torch.from_numpy(np.asarray(descriptors, np.float32))
    sim = -torch.cdist(d, d).pow(2) / d.shape[1]
    n = len(d)
    sim.fill_diagonal_(-float("inf"))
    k = min(k, n - 1)
    neighbours = sim.topk(k, dim=1).indices.numpy()
    far = []
    for i in range(n):
        others = np.delete(sim[i].numpy(), i)
        cut = np.quantile(others, 0.5) if len(others) else 0.0
        cand = np.flatnonzero(sim[i].numpy() <= cut)
        far.append(cand[cand != i])
    return neighbours, far


@dataclass
class PixelPools:
    """Per image, the flat feature-grid positions above (``positives``) and below (``negatives``) the threshold."""

    positives: list[np.ndarray]
    negatives: list[np.ndarray]

    @classmethod
    def from_maps(cls, maps_on_grid: torch.Tensor, thresholds: np.ndarray) -> "PixelPools":
        above = (maps_on_grid.flatten(1) > torch.as_tensor(thresholds, dtype=maps_on_grid.dtype)[:, None]).numpy()
        return cls.from_masks(above)

    @classmethod
    def from_masks(cls, masks_on_grid: np.ndarray) -> "PixelPools":
        """Positives where the N×h×w boolean masks are set, negatives elsewhere."""
        flat = np.asarray(masks_on_grid, bool).reshape(len(masks_on_grid), -1)
        return cls([np.flatnonzero(a) for a in flat], [np.flatnonzero(~a) for a in flat])

    def capped(self, limit: int, rng: np.random.Generator) -> "PixelPools":
        """At most ``limit`` random positions of each kind per image (kept sorted)."""
        cap = lambda p: np.sort(rng.choice(p, limit, replace=False)) if len(p) > limit else p
        return PixelPools([cap(p) for p in self.positives], [cap(p) for p in self.negatives])


class PixelBank:
    """The pooled pixels' scaled feature vectors, per image and kind, in one array: in memory up to ``memory_mb``,
    beyond that in a temporary on-disk array read back by rows (pread), so the head's memory stays flat at any N.

    Layout n × 2 (positives, negatives) × ``cap`` × C of ``dtype``; a pool shorter than ``cap`` leaves its tail unused."""

    KINDS = ("positives", "negatives")

    def __init__(self, n: int, cap: int, channels: int, memory_mb: float, batch_size: int, dtype: str = "float32"):
        self.shape = (n, len(self.KINDS), cap, channels)
        self.batch_size = batch_size
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.on_disk = self.nbytes > memory_mb * 2**20
        self._tmp: tempfile.TemporaryDirectory | None = None
        if self.on_disk:
            runtime.cache_dir().mkdir(parents=True, exist_ok=True)
            self._tmp = tempfile.TemporaryDirectory(prefix="pixel-bank-", dir=runtime.cache_dir())
            self._writer = ShardedArrayWriter(self._tmp.name, self.shape, self.dtype, batch_size)
        else:
            self._array = np.zeros(self.shape, self.dtype)

    def put_batch(self, first: int, rows: np.ndarray) -> None:
        """Rows ``first … first + len(rows) − 1`` (B × 2 × cap × C); ``first`` is a multiple of ``batch_size``."""
        if self.on_disk:
            self._writer.write(first // self.batch_size, rows)
        else:
            self._array[first : first + len(rows)] = rows

    def get(self, image: int, kind: str, slots: np.ndarray) -> torch.Tensor:
        """The vectors in ``slots`` of one image's pool of ``kind``, float32 (len(slots) × C)."""
        row = self._writer.array[image] if self.on_disk else self._array[image]
        return torch.from_numpy(row[self.KINDS.index(kind)][slots].astype(np.float32))

    def close(self) -> None:
        if self._tmp is not None:
            self._writer.close()
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "PixelBank":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pick(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    if len(pool) == 0:
        return pool
    return rng.choice(pool, size=n, replace=len(pool) < n)


def sample_step(i: int, pools: PixelPools, neighbours: np.ndarray, far: list[np.ndarray], rng: np.random.Generator, n_self: int = 20, n_pool: int = 50, n_counter_images: int = 5) -> dict[str, list[tuple[int, np.ndarray]]]:
    """The pixels of one training step for image i, as (image, flat positions) lists: ``pos_i``/``neg_i`` (n_self
    each from i), ``pos_nb``/``neg_nb`` (n_pool each from i ∪ its neighbours), ``pos_counter`` (n_pool positives
    from ``n_counter_images`` random far-half images)."""

    def from_images(imgs: np.ndarray, kind: str, n: int) -> list[tuple[int, np.ndarray]]:
        pool = [getattr(pools, kind)[j] for j in imgs]
        ends = np.cumsum([len(p) for p in pool])
        if not len(ends) or ends[-1] == 0:
            return []
        pick = rng.choice(ends[-1], size=n, replace=ends[-1] < n)
        owner = np.searchsorted(ends, pick, side="right")
        positions = np.concatenate(pool)[pick]
        return [(int(imgs[o]), positions[owner == o]) for o in np.unique(owner)]

    group = np.concatenate([[i], neighbours[i]])
    counter = far[i] if len(far[i]) else np.array([], int)
    counter = rng.choice(counter, size=min(n_counter_images, len(counter)), replace=False) if len(counter) else counter
    return {
        "pos_i": [(i, _pick(rng, pools.positives[i], n_self))] if len(pools.positives[i]) else [],
        "neg_i": [(i, _pick(rng, pools.negatives[i], n_self))] if len(pools.negatives[i]) else [],
        "pos_nb": from_images(group, "positives", n_pool),
        "neg_nb": from_images(group, "negatives", n_pool),
        "pos_counter": from_images(counter, "positives", n_pool),
    }


def gather_vectors(parts: dict[str, list[tuple[int, np.ndarray]]], pools: PixelPools, bank: PixelBank) -> dict[str, torch.Tensor]:
    """The bank's vectors of one step's sampled pixels (:func:`sample_step`), per part: ``pos_*`` parts from the
    positives, ``neg_*`` from the negatives; an empty part gives 0×C."""
    vectors = {}
    for key, picks in parts.items():
        kind = "positives" if key.startswith("pos") else "negatives"
        pool = getattr(pools, kind)
        rows = [bank.get(j, kind, np.searchsorted(pool[j], p)) for j, p in picks]
        vectors[key] = torch.cat(rows) if rows else torch.empty(0, bank.shape[-1])
    return vectors


class ContrastiveHead(Representation):
    """Blind-LCA: a 1×1 head (C→C/2→C, L2 norm) trained contrastively on pixels of the binarized maps, then eq. 2.

    Positives are the feature-grid cells inside the Regions record's masks (whichever binarizer made them: the S4
    threshold by default, MEBin, Otsu, or the ground truth), negatives the rest; ``threshold`` instead thresholds
    the maps directly. Each step takes image i, its ``n_neighbors`` nearest images by eq. 2 descriptor
    and ``n_counter_images`` images from the far half, and applies Hadsell's margin loss to (pos_i, pos_nb),
    (neg_i, neg_nb) [pull] and (pos_i, neg_nb), (pos_nb, pos_counter) [push]; only the sampled pixel vectors go
    through the head; each image keeps at most ``max_pixels_per_image`` random candidates of each kind, whose
    vectors sit in one :class:`PixelBank` array (``bank_dtype``; on disk beyond ``bank_memory_mb``). AdamW, ``epochs`` passes over the set. The head's weights are the learned state, so
    ``transform`` describes new images. Inputs are per-instance 0–1 scaled features, as in the reference.
    """

    uses_global_rng: ClassVar[bool] = False  # seeded from its own seed (torch and NumPy generators)

    parameter_constraints: ClassVar[dict[str, list]] = {
        "tau": [Interval(0, None)], "blur_sigma": [Interval(0, None, "left")],
        "normalize_maps": [set(MAP_NORMALIZATIONS)], "hidden_channels": [None, Interval(1, None, "left", integer=True)],
        "n_neighbors": [Interval(1, None, "left", integer=True)], "margin": [Interval(0, None)],
        "lr": [Interval(0, None)], "weight_decay": [Interval(0, None, "left")],
        "epochs": [Interval(0, None, "left", integer=True)],
        "max_pixels_per_image": [Interval(1, None, "left", integer=True)], "bank_dtype": [{"float32", "float16"}],
        "batch_size": [Interval(1, None, "left", integer=True)],
    }

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        backbone_weights: str | None = None,
        layers: tuple[str, ...] = (),
        input_size: int = 512,
        tau: float = 0.002,
        blur_sigma: float = 2.0,
        normalize_maps: str = "minmax-set",
        hidden_channels: int | None = None,
        n_neighbors: int = 3,
        n_counter_images: int = 5,
        n_self: int = 20,
        n_pool: int = 50,
        margin: float = 0.5,
        lr: float = 5e-4,
        weight_decay: float = 0.01,
        epochs: int = 10,
        threshold: float | None = None,
        max_pixels_per_image: int = 512,
        bank_memory_mb: float = 1024.0,
        bank_dtype: str = "float32",
        seed: int = 0,
        batch_size: int = 8,
    ):
        self.backbone = backbone
        self.backbone_weights = backbone_weights
        self.layers = layers
        self.input_size = input_size
        self.tau = tau
        self.blur_sigma = blur_sigma
        self.normalize_maps = normalize_maps
        self.hidden_channels = hidden_channels
        self.n_neighbors = n_neighbors
        self.n_counter_images = n_counter_images
        self.n_self = n_self
        self.n_pool = n_pool
        self.margin = margin
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.threshold = threshold
        self.max_pixels_per_image = max_pixels_per_image
        self.bank_memory_mb = bank_memory_mb
        self.bank_dtype = bank_dtype
        self.seed = seed
        self.batch_size = batch_size

    def _features(self, images: ImageSet) -> FeatureArray:
        return extract_features(images, FeatureSpec(self.backbone, tuple(self.layers), self.input_size, self.backbone_weights))

    def fit(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> "ContrastiveHead":
        validate_params(self)
        feats = self._features(images)
        n, c, h, w = feats.shape
        rng = np.random.default_rng(self.seed)  # pools first, then (one process) the training order and samples
        pools = self._pools(maps, regions, (h, w)).capped(self.max_pixels_per_image, rng)
        cap = max([1] + [len(p) for p in pools.positives] + [len(p) for p in pools.negatives])
        with PixelBank(n, cap, c, self.bank_memory_mb, self.batch_size, self.bank_dtype) as bank:  # its file goes however training ends
            descriptors = self._fill_bank(feats, maps, pools, bank)
            neighbours, far = image_neighbours(descriptors, self.n_neighbors)
            head, losses = self._train_head(bank, pools, neighbours, far, rng)
        self.bank_mb_ = bank.nbytes / 2**20
        self.bank_on_disk_ = bank.on_disk
        self.head_ = head.eval().cpu()
        self.loss_history_ = losses
        self.n_positive_pixels_ = int(sum(len(p) for p in pools.positives))
        return self

    def _pools(self, maps: AnomalyMaps, regions: Regions, grid: tuple[int, int]) -> PixelPools:
        """Positive and negative feature-grid cells per image: the binarizer's masks, whichever made them (S4
        threshold, MEBin, Otsu, ground truth), or the maps above an explicit ``threshold``."""
        if self.threshold is None:
            return PixelPools.from_masks(masks_on_grid(np.asarray(regions.masks), grid))
        on_grid = maps_on_grid(np.asarray(maps.maps), grid)
        return PixelPools.from_maps(on_grid, np.full(len(on_grid), self.threshold, np.float32))

    def _fill_bank(self, feats: FeatureArray, maps: AnomalyMaps, pools: PixelPools, bank: PixelBank) -> np.ndarray:
        """One pass over the features: the eq. 2 descriptors (returned, N×C) and the pooled pixels' 0–1 scaled
        vectors, written into ``bank``."""
        n, c, h, w = feats.shape
        weights = normalize_maps(maps.scored_maps, self.normalize_maps)
        descriptors = np.empty((n, c), np.float32)
        for idx, f in feature_batches(feats, self.batch_size, True, "contrastive: descriptors"):
            descriptors[idx] = weighted_descriptor(f, maps_on_grid(weights[idx], (h, w)), self.tau, self.blur_sigma).numpy()
            flat = f.flatten(2).transpose(1, 2).numpy()  # B × h·w × C
            rows = np.zeros((len(idx), len(PixelBank.KINDS), bank.shape[2], c), bank.dtype)
            for b, j in enumerate(idx):
                for k, kind in enumerate(PixelBank.KINDS):
                    pool = getattr(pools, kind)[j]
                    rows[b, k, : len(pool)] = flat[b, pool]
            bank.put_batch(int(idx[0]), rows)
        return descriptors

    def _train_head(self, bank: PixelBank, pools: PixelPools, neighbours: np.ndarray, far: list[np.ndarray],
                    rng: np.random.Generator) -> tuple[ProjectionHead, list[float]]:
        """The head trained on sampled pixel vectors only (one step per image, ``epochs`` passes) and its mean loss
        per epoch. One process draws the image order and the samples from ``rng``; in a multi-process run every
        process draws the same order (each takes its share) and its own samples."""
        n, channels = len(pools.positives), bank.shape[-1]
        torch.manual_seed(self.seed)
        head = ProjectionHead(channels, self.hidden_channels or max(1, channels // 2))
        opt = torch.optim.AdamW(head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        order_rng = rng
        if runtime.world_size() > 1:
            order_rng, rng = np.random.default_rng(self.seed), np.random.default_rng([self.seed, runtime.rank()])

        def batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
            for i in training.deal_out(order_rng.permutation(n)):
                parts = sample_step(int(i), pools, neighbours, far, rng, self.n_self, self.n_pool, self.n_counter_images)
                yield gather_vectors(parts, pools, bank)

        log = training.train(head, opt, batches, self._step_loss, self.epochs, desc="contrastive: training",
                             steps_per_epoch=len(training.deal_out(np.arange(n))))
        return head, [total / max(n, 1) for total in log.epoch_totals()]

    def _step_loss(self, model: nn.Module, vectors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Hadsell's loss of one step: pull (pos_i, pos_nb), (neg_i, neg_nb); push (pos_i, neg_nb), (pos_nb, pos_counter)."""
        out = model(torch.cat(list(vectors.values())))  # only the sampled pixel vectors go through the head
        z = dict(zip(vectors, out.split([len(v) for v in vectors.values()])))
        loss = hadsell_loss(
            [(z["pos_i"], z["pos_nb"]), (z["neg_i"], z["neg_nb"])],
            [(z["pos_i"], z["neg_nb"]), (z["pos_nb"], z["pos_counter"])],
            self.margin,
        )
        if runtime.world_size() > 1:  # every process must take part in every step, even one whose sample gave no pairs
            loss = loss + 0.0 * out.sum()
        return loss

    def transform(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> Embeddings:
        check_is_fitted(self, "head_")
        feats = self._features(images)
        weights = normalize_maps(maps.scored_maps, self.normalize_maps)
        dev = runtime.device()
        head = copy.deepcopy(self.head_).to(dev)  # a copy on the device: transform leaves the fitted head as it is
        out = np.empty((len(images), feats.shape[1]), np.float32)
        with torch.no_grad():
            for idx, f in feature_batches(feats, self.batch_size, True, "contrastive: embed"):
                z = head.forward_map(f.to(dev)).cpu()
                out[idx] = weighted_descriptor(z, maps_on_grid(weights[idx], f.shape[-2:]), self.tau, self.blur_sigma).numpy()
        return Embeddings.per_image(out, {"backbone": self.backbone, "tau": self.tau, "final_loss": self.loss_history_[-1] if self.loss_history_ else None})

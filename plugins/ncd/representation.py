"""MGViT-NCD (AnomalyNCD §III-C): mask-guided ViT on anomaly-centred crops, trained by self-distillation.

Two backbones:

* **ViT** (``backbone`` = a timm ViT such as ``vit_base_patch8_224.dino``, the paper's): weights from a local file
  (``backbone_weights``; never random). Blocks are frozen except the last; the last ``mask_layers`` blocks use
  mask-guided attention.
* **Hybrid** (``backbone`` = a CNN name, default ``tf_efficientnet_lite0``; what runs offline here): tokens are the
  frozen pretrained CNN's stride-8 map (``anomaly_clustering.backbones``) projected to ``width`` by a linear layer,
  plus a CLS token and positional embeddings, then ``depth`` mask-guided transformer blocks (all trained).

Mask-guided attention: the CLS row of the attention logits is −1e9 wherever the crop mask, average-pooled to the
token grid, is < 0.5 (so the class token attends only to anomalous tokens). Trained: the last block / the hybrid's
blocks, ``n_heads`` cosine classifier heads and a projector, with DINO-style self-distillation between two views
(teacher temperature 0.07 → 0.04), mean-entropy maximisation, pseudo-label correction from the crop scores, InfoNCE,
and, with ``base_dir``, supervised CE + SupCon on labelled crops of another product. Every frozen part is
deterministic for a fixed crop, mask and view, so with ``cache_views`` the frozen token states of a fixed pool of
``n_views`` augmented views per crop are computed once and the trainable part is trained on that cache.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anomaly_clustering import runtime, training
from anomaly_clustering.backbones import DEFAULT_BACKBONE, FeatureSpec, MissingWeightsError, get_backbone, resolve_weights
from anomaly_clustering.data import DataError, GOOD_NAMES, load_ground_truth, load_image_set
from anomaly_clustering.interfaces import Representation
from anomaly_clustering.records import AnomalyMaps, Embeddings, ImageSet, Regions
from anomaly_clustering.regions import masks_to_regions
from anomaly_clustering.validation import check_is_fitted

from .crops import CropBox, crop_boxes, crop_images

NEG = -1e9


# --------------------------------------------------------------------------------------------- mask-guided attention
def token_keep(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """B×(1+N) bool: CLS (always) + tokens whose average-pooled mask is ≥ 0.5. A crop whose mask covers no token
    that much keeps the tokens it touches at all (else its class token would see only itself)."""
    pooled = F.adaptive_avg_pool2d(masks.float(), grid).flatten(1)  # B×N
    keep = pooled >= 0.5
    weak = ~keep.any(1)
    keep[weak] = pooled[weak] > 0
    return torch.cat([torch.ones(len(keep), 1, dtype=torch.bool, device=keep.device), keep], 1)


def cls_attention_bias(keep: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive attention mask B×1×T×T: the CLS row is −1e9 at the tokens not kept, all else 0 (paper eq. 2–3)."""
    b, t = keep.shape
    bias = torch.zeros(b, 1, t, t, dtype=dtype, device=keep.device)
    bias[:, 0, 0, :] = torch.where(keep, 0.0, NEG).to(dtype)
    return bias


def attention_weights(block: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The softmax attention weights (B×heads×T×T) of a timm ``Block``'s attention on input ``x`` (for inspection)."""
    attn = block.attn
    h = block.norm1(x)
    b, t, _ = h.shape
    qkv = attn.qkv(h).reshape(b, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    if bias is not None:
        logits = logits + bias
    return logits.softmax(-1)


class CosineHead(nn.Module):
    """A linear classifier on L2-normalised features with weight-normalised prototypes (logits in [−1, 1])."""

    def __init__(self, width: int, n_classes: int):
        super().__init__()
        self.prototypes = nn.utils.parametrizations.weight_norm(nn.Linear(width, n_classes, bias=False))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.prototypes(F.normalize(f, dim=-1))


class MaskGuidedTop(nn.Module):
    """The trainable part: (hybrid only: token projection, CLS, positions) → mask-guided blocks → norm → heads."""

    def __init__(self, blocks: nn.ModuleList, norm: nn.Module, width: int, n_classes: int, n_heads: int,
                 embed_dim: int | None = None, n_tokens: int = 0):
        super().__init__()
        self.embed = embed_dim is not None
        if self.embed:
            self.proj = nn.Linear(embed_dim, width)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
            self.pos_embed = nn.Parameter(torch.randn(1, 1 + n_tokens, width) * 0.02)
        self.blocks = blocks
        self.norm = norm
        self.heads = nn.ModuleList([CosineHead(width, n_classes) for _ in range(n_heads)])
        self.projector = nn.Sequential(nn.Linear(width, 512), nn.GELU(), nn.Linear(512, 512), nn.GELU(), nn.Linear(512, 128))

    def features(self, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = tokens.float()
        if self.embed:
            x = self.proj(x)
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1) + self.pos_embed
        bias = cls_attention_bias(keep, x.dtype)
        for blk in self.blocks:
            x = blk(x, attn_mask=bias)
        return self.norm(x)[:, 0]

    def forward(self, tokens: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(heads×B×classes cosine logits, B×128 normalised projections)."""
        f = self.features(tokens, keep)
        return torch.stack([h(f) for h in self.heads]), F.normalize(self.projector(f), dim=-1)


class FrozenStem(nn.Module):
    """The frozen part: views (B×3×S×S in [0, 1]) + masks → (tokens entering the trainable part, keep mask)."""

    def __init__(self, kind: str, module: nn.Module, grid: tuple[int, int], mask_from: int = 0):
        super().__init__()
        self.kind, self.module, self.grid, self.mask_from = kind, module.eval().requires_grad_(False), grid, mask_from

    @torch.no_grad()
    def forward(self, views: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = token_keep(masks, self.grid)
        if self.kind == "cnn":
            return self.module(views).flatten(2).transpose(1, 2), keep  # B×N×C
        vit = self.module
        mean = torch.tensor(vit.pretrained_cfg["mean"], device=views.device).view(1, 3, 1, 1)
        std = torch.tensor(vit.pretrained_cfg["std"], device=views.device).view(1, 3, 1, 1)
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed((views - mean) / std))))
        bias = cls_attention_bias(keep, x.dtype)
        for i, blk in enumerate(vit.blocks[:-1]):
            x = blk(x, attn_mask=bias if i >= self.mask_from else None)
        return x, keep  # B×(1+N)×D, before the last (trainable) block


# ------------------------------------------------------------------------------------------------------ views
def augment(patches: torch.Tensor, masks: torch.Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.5, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """One random view per crop, image and mask transformed together: random resized crop (area ``scale``, aspect
    3/4–4/3), horizontal and vertical flips, brightness/contrast jitter of ±20 %."""
    b, _, s, _ = patches.shape
    out_p, out_m = torch.empty_like(patches), torch.empty_like(masks)
    r = torch.rand(b, 6, generator=generator)
    for i in range(b):
        area = scale[0] + (scale[1] - scale[0]) * float(r[i, 0])
        aspect = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * float(r[i, 1]))
        w = int(round(min(s, s * math.sqrt(area * aspect))))
        h = int(round(min(s, s * math.sqrt(area / aspect))))
        x0 = int(float(r[i, 2]) * (s - w + 1))
        y0 = int(float(r[i, 3]) * (s - h + 1))
        p = F.interpolate(patches[i : i + 1, :, y0 : y0 + h, x0 : x0 + w], size=(s, s), mode="bilinear", align_corners=False)
        m = F.interpolate(masks[i : i + 1, :, y0 : y0 + h, x0 : x0 + w], size=(s, s), mode="bilinear", align_corners=False)
        flips = [d for d, flip in ((3, r[i, 4] < 0.5), (2, r[i, 5] < 0.5)) if flip]
        if flips:
            p, m = p.flip(flips), m.flip(flips)
        jitter = 0.8 + 0.4 * torch.rand(2, generator=generator)
        mean = p.mean()
        out_p[i] = ((p - mean) * jitter[1] + mean * jitter[0]).clamp(0, 1)[0]
        out_m[i] = m[0]
    return out_p, out_m


# ------------------------------------------------------------------------------------------------------- losses
def info_nce(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss on 2B normalised projections (rows i and i+B are two views of one crop)."""
    n = len(z) // 2
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), NEG)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def sup_con(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al.) on normalised projections with class labels."""
    sim = z @ z.t() / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, NEG)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    log_prob = sim - torch.logsumexp(sim, 1, keepdim=True)
    return -((log_prob * pos).sum(1) / pos.sum(1).clamp_min(1)).mean()


@dataclass(frozen=True)
class TrainingCrops:
    """What MGViT trains on, one row per crop: patches (n×3×S×S), masks (n×1×S×S), labels (−1 unlabelled, else the
    base set's class), scores (the crop's anomaly score; 1 for base crops)."""

    patches: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor


# ------------------------------------------------------------------------------------------------ representation
class MGViTNCD(Representation):
    """AnomalyNCD's MGViT: mask-guided ViT (or CNN-token hybrid) on anomaly crops, DINO-style self-distillation.

    Emits one row per crop: the class probabilities (softmax(logits / 0.1)) of the head with the lowest training
    loss, weights = sqrt(mask pixel count) for area-weighted merging (``info["kind"] = "probabilities"``).
    ``backbone``: a timm ViT (``vit_base_patch8_224.dino``, ``vit_small_patch8_224.dino``, ``…patch16…``; weights
    from ``backbone_weights``) or a CNN for the hybrid (default). ``input_size``: view side (None: 224 for a ViT,
    96 for the hybrid). ``epochs``/``repeats``: the paper trains 50 epochs over the set repeated 4×; keep them
    small on a CPU. ``base_dir``: an optional labelled set of another product (MVTec layout with ground truth).
    """

    uses_global_rng: ClassVar[bool] = False  # torch and its augmentation generator seeded from its own seed

    def __init__(
        self,
        n_clusters: int = 2,
        backbone: str = DEFAULT_BACKBONE,
        backbone_weights: str | None = None,
        input_size: int | None = None,
        layers: tuple[str, ...] = (),
        width: int = 128,
        depth: int = 2,
        attention_heads: int = 4,
        mask_layers: int = 9,
        n_heads: int = 4,
        epochs: int = 50,
        repeats: int = 4,
        batch_size: int = 32,
        lr: float = 0.003,
        momentum: float = 0.9,
        weight_decay: float = 5e-5,
        student_temperature: float = 0.1,
        teacher_temperature: tuple[float, float] = (0.07, 0.04),
        teacher_warmup: float = 0.8,
        entropy_weight: float = 4.0,
        contrastive_weight: float = 1.0,
        supervised_weight: float = 0.3,
        normal_correction: bool = True,
        base_dir: str | None = None,
        cache_views: bool = True,
        n_views: int = 6,
        source_size: int = 512,
        seed: int = 3407,
    ):
        self.n_clusters = n_clusters
        self.backbone = backbone
        self.backbone_weights = backbone_weights
        self.input_size = input_size
        self.layers = layers
        self.width = width
        self.depth = depth
        self.attention_heads = attention_heads
        self.mask_layers = mask_layers
        self.n_heads = n_heads
        self.epochs = epochs
        self.repeats = repeats
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.teacher_warmup = teacher_warmup
        self.entropy_weight = entropy_weight
        self.contrastive_weight = contrastive_weight
        self.supervised_weight = supervised_weight
        self.normal_correction = normal_correction
        self.base_dir = base_dir
        self.cache_views = cache_views
        self.n_views = n_views
        self.source_size = source_size
        self.seed = seed

    # ---------------------------------------------------------------------------------------------- building
    @property
    def is_vit(self) -> bool:
        return self.backbone.startswith(("vit_", "deit_"))

    @property
    def view_size(self) -> int:
        return int(self.input_size or (224 if self.is_vit else 96))

    def _build_vit(self) -> tuple[FrozenStem, nn.ModuleList, nn.Module, int]:
        import timm

        path = resolve_weights(self.backbone, self.backbone_weights)
        if path is None:
            raise MissingWeightsError(
                f"backbone {self.backbone!r}: the DINO ViT needs its weights as a local file; pass "
                "--representation.backbone_weights FILE (timm/DINO checkpoint, .pth or .safetensors)"
            )
        vit = timm.create_model(self.backbone, pretrained=False, num_classes=0, img_size=self.view_size)
        state = (__import__("safetensors.torch", fromlist=["load_file"]).load_file(path) if path.endswith(".safetensors")
                 else torch.load(path, map_location="cpu", weights_only=True))
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(state, vit)  # DINO/original key layouts; positions resampled to the view size
        missing, _ = vit.load_state_dict({k: v for k, v in state.items() if not k.startswith("head")}, strict=False)
        if [k for k in missing if not k.startswith("head")]:
            raise MissingWeightsError(f"{path}: does not fit {self.backbone} (missing e.g. {missing[:3]})")
        grid = vit.patch_embed.grid_size
        depth = len(vit.blocks)
        stem = FrozenStem("vit", vit, tuple(grid), mask_from=depth - self.mask_layers)
        return stem, nn.ModuleList([copy.deepcopy(vit.blocks[-1])]), copy.deepcopy(vit.norm), vit.embed_dim

    def _build_cnn(self) -> tuple[FrozenStem, int, int]:
        spec = FeatureSpec(self.backbone, tuple(self.layers), self.view_size, self.backbone_weights)
        cnn = get_backbone(spec)
        with torch.no_grad():
            probe = cnn(torch.zeros(1, 3, self.view_size, self.view_size))
        grid = tuple(probe.shape[-2:])
        return FrozenStem("cnn", cnn, grid), probe.shape[1], grid[0] * grid[1]

    def _stem(self) -> FrozenStem:
        if getattr(self, "_stem_cache", None) is None:
            self._stem_cache = self._build_vit()[0] if self.is_vit else self._build_cnn()[0]
        return self._stem_cache

    def _new_top(self, n_classes: int) -> MaskGuidedTop:
        from timm.models.vision_transformer import Block

        if self.is_vit:
            stem, blocks, norm, width = self._build_vit()
            self._stem_cache = stem
            return MaskGuidedTop(blocks.requires_grad_(True), norm.requires_grad_(True), width, n_classes, self.n_heads)
        stem, channels, n_tokens = self._build_cnn()
        self._stem_cache = stem
        blocks = nn.ModuleList([Block(self.width, self.attention_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(self.depth)])
        return MaskGuidedTop(blocks, nn.LayerNorm(self.width), self.width, n_classes, self.n_heads, channels, n_tokens)

    def __getstate__(self) -> dict[str, Any]:  # the frozen backbone is rebuilt on demand, never pickled
        state = dict(self.__dict__)
        state.pop("_stem_cache", None)
        state.pop("_top_cache", None)
        return state

    # ------------------------------------------------------------------------------------------------ data
    def _crops(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> tuple[list[CropBox], torch.Tensor, torch.Tensor]:
        crops = crop_boxes(regions, maps)
        patches, masks = crop_images(images, crops, maps.map_size, self.view_size, self.source_size)
        return crops, patches, masks

    def _base_set(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        """Labelled crops of the base set (ground-truth masks): patches, masks, labels, class names."""
        root = Path(self.base_dir)
        if not root.is_dir():
            raise DataError(f"--representation.base_dir {self.base_dir}: no such folder")
        test = root / "test" if (root / "test").is_dir() else root
        images = load_image_set(str(test))
        gt = load_ground_truth(images)
        keep = [i for i, lab in enumerate(gt.labels) if lab.lower() not in GOOD_NAMES and gt.mask_paths[i]]
        if not keep:
            raise DataError(f"--representation.base_dir {self.base_dir}: no defect images with ground-truth masks")
        images = images.subset(keep)
        labels = [gt.labels[i] for i in keep]
        classes = sorted(set(labels))
        size = (self.source_size // 2, self.source_size // 2)
        gt = load_ground_truth(images)
        masks = np.stack([gt.load_mask(i, size) for i in range(len(images))])
        fake = AnomalyMaps(masks.astype(np.float32), np.ones(len(images), np.float32), np.full((len(images), 2), size[0]))
        masks, regs = masks_to_regions(masks, fake.maps, 1)
        regions = Regions(masks, np.zeros(len(images), np.float32), regs, {"counts": np.bincount([r.image_index for r in regs], minlength=len(images)).tolist()})
        crops = crop_boxes(regions, fake)
        patches, cmasks = crop_images(images, crops, size, self.view_size, self.source_size)
        y = torch.tensor([classes.index(labels[c.image_index]) for c in crops])
        return patches, cmasks, y, classes

    def _encode(self, patches: torch.Tensor, masks: torch.Tensor, device: torch.device, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        stem = self._stem().to(device)
        toks, keeps = [], []
        for s in range(0, len(patches), chunk):
            t, k = stem(patches[s : s + chunk].to(device), masks[s : s + chunk].to(device))
            toks.append(t.to(torch.float16).cpu()), keeps.append(k.cpu())
        return torch.cat(toks), torch.cat(keeps)

    # ------------------------------------------------------------------------------------------------ fit
    def fit(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> "MGViTNCD":
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)  # views and batch order, in the order they are needed
        crops, data, base_classes = self._training_crops(images, maps, regions)
        n_classes = len(base_classes) + self.n_clusters
        top = self._new_top(n_classes)
        started = time.perf_counter()
        views = self._view_cache(data, gen) if self.cache_views else None
        self.cache_seconds_ = time.perf_counter() - started  # 0 without the cache
        head_losses = self._train(top, data, views, gen, len(base_classes))
        self.best_head_ = int(torch.argmin(head_losses))
        self.n_base_classes_ = len(base_classes)
        self.base_classes_ = base_classes
        self.n_crops_ = len(crops)
        self.state_ = {k: v.detach().cpu().clone() for k, v in top.state_dict().items()}
        self.n_outputs_ = n_classes
        self._top_cache = top.cpu().eval()
        return self

    def _training_crops(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> tuple[list[CropBox], TrainingCrops, list[str]]:
        """The set's crops (unlabelled, −1) followed by, with ``base_dir``, the labelled crops of the base set (score 1);
        also returns the set's own crops and the base set's class names."""
        crops, patches, masks = self._crops(images, maps, regions)
        data = TrainingCrops(patches, masks, torch.full((len(crops),), -1, dtype=torch.long),
                             torch.tensor([c.score for c in crops], dtype=torch.float32))
        if not self.base_dir:
            return crops, data, []
        bp, bm, by, base_classes = self._base_set()
        data = TrainingCrops(torch.cat([data.patches, bp]), torch.cat([data.masks, bm]), torch.cat([data.labels, by]),
                             torch.cat([data.scores, torch.ones(len(by))]))
        return crops, data, base_classes

    def _view_cache(self, data: TrainingCrops, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen part's tokens and keep masks of ``n_views`` augmented views per crop: n×V×T×C, n×V×T."""
        device = runtime.device()
        pool_t, pool_k = [], []
        for _ in runtime.progress(range(self.n_views), desc="mgvit view cache", unit="view"):
            t, k = self._encode(*augment(data.patches, data.masks, gen), device)
            pool_t.append(t), pool_k.append(k)
        return torch.stack(pool_t, 1), torch.stack(pool_k, 1)

    def _pair_views(self, idx: torch.Tensor, data: TrainingCrops, views: tuple[torch.Tensor, torch.Tensor] | None,
                    gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens and keep masks of two different views of each crop in ``idx`` (2B rows: all first views, then all
        second ones), from the view cache or freshly augmented and encoded."""
        if views is None:
            ta, ka = self._encode(*augment(data.patches[idx], data.masks[idx], gen), runtime.device())
            tb, kb = self._encode(*augment(data.patches[idx], data.masks[idx], gen), runtime.device())
        else:
            va = torch.randint(0, self.n_views, (len(idx),), generator=gen)
            vb = (va + torch.randint(1, max(self.n_views, 2), (len(idx),), generator=gen)) % max(self.n_views, 1)
            (tokens, keep) = views
            ta, ka, tb, kb = tokens[idx, va], keep[idx, va], tokens[idx, vb], keep[idx, vb]
        return torch.cat([ta, tb]), torch.cat([ka, kb])

    def _teacher_temperature(self, epoch: int) -> float:
        """The teacher's temperature in ``epoch``: linear from the first to the second value over the warm-up."""
        warm = max(1, int(round(self.teacher_warmup * self.epochs)))
        t0, t1 = self.teacher_temperature
        return t0 + (t1 - t0) * min(epoch / warm, 1.0) if warm > 1 else t1

    def _train(self, top: MaskGuidedTop, data: TrainingCrops, views: tuple[torch.Tensor, torch.Tensor] | None,
               gen: torch.Generator, n_base: int) -> torch.Tensor:
        """Train ``top`` (SGD, cosine schedule) on ``repeats`` shuffles of the crops per epoch, in batches of two
        views per crop; in a multi-process run each process takes its share of every epoch. Records the mean loss
        per epoch; returns each head's summed loss over the last epoch."""
        n = len(data.patches)
        optimizer = torch.optim.SGD(top.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        steps_per_epoch = max(1, math.ceil(n * self.repeats / runtime.world_size() / self.batch_size))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps_per_epoch * self.epochs, 1), eta_min=self.lr * 1e-3)
        head_sums = torch.zeros(self.epochs, self.n_heads)

        def batches(epoch: int) -> Iterator[dict[str, Any]]:
            tau = self._teacher_temperature(epoch)
            for idx in training.shuffled_batches(n, self.batch_size, gen, self.repeats, min_size=2):
                tokens, keep = self._pair_views(idx, data, views, gen)
                yield {"tokens": tokens, "keep": keep, "labels": data.labels[idx], "scores": data.scores[idx], "tau": tau, "epoch": epoch}

        def step_loss(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
            logits, z = model(batch["tokens"], batch["keep"])  # heads×2B×C, 2B×128
            loss, per_head = self._loss(logits, z, batch["labels"], batch["scores"], n_base, batch["tau"])
            head_sums[batch["epoch"]] += per_head.detach().cpu()
            return loss

        log = training.train(top, optimizer, batches, step_loss, self.epochs, scheduler=scheduler, desc="mgvit-ncd",
                             steps_per_epoch=steps_per_epoch)
        self.history_ = [total / steps_per_epoch for total in log.epoch_totals()]
        self.epoch_seconds_ = list(log.seconds)
        return head_sums[-1] if self.epochs else torch.zeros(self.n_heads)

    def _loss(self, logits: torch.Tensor, z: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, n_base: int, tau_t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Total loss and each head's own part (its self-distillation + entropy + CE terms)."""
        b = len(labels)
        lab = labels >= 0
        unl = ~lab
        y2 = labels.repeat(2)
        per_head = []
        for head in logits:
            student = head / self.student_temperature
            log_p = F.log_softmax(student, -1)
            terms = torch.zeros((), device=head.device)
            if unl.any():
                novel = head[:, n_base:].detach() / tau_t
                q = F.softmax(novel, -1)
                if self.normal_correction:
                    w = (0.5 - scores).clamp_min(0).repeat(2)[:, None]
                    e1 = torch.zeros_like(q)
                    e1[:, 0] = 1.0
                    q = w * e1 + (1 - w) * q
                q_full = torch.cat([torch.zeros(len(q), n_base, device=q.device), q], 1)
                qa, qb = q_full[:b], q_full[b:]
                lpa, lpb = log_p[:b], log_p[b:]
                cluster = 0.5 * (-(qa * lpb).sum(1) - (qb * lpa).sum(1))[unl].mean()
                p_mean = torch.cat([log_p[:b][unl], log_p[b:][unl]]).exp().mean(0)
                entropy = -(p_mean * torch.log(p_mean + 1e-8)).sum()
                reg = math.log(p_mean.numel()) - entropy
                terms = terms + (1 - self.supervised_weight * bool(lab.any())) * (cluster + self.entropy_weight * reg)
            if lab.any():
                ce = F.nll_loss(log_p[torch.cat([lab, lab])], y2[torch.cat([lab, lab])])
                terms = terms + self.supervised_weight * ce
            per_head.append(terms)
        per_head_t = torch.stack(per_head)
        total = per_head_t.sum()
        if self.contrastive_weight > 0:
            rep = info_nce(z, 1.0)
            if lab.any():
                lz = torch.cat([z[:b][lab], z[b:][lab]])
                rep = (1 - self.supervised_weight) * rep + self.supervised_weight * sup_con(lz, torch.cat([labels[lab], labels[lab]]), 0.07)
            total = total + self.contrastive_weight * rep
        return total, per_head_t

    # -------------------------------------------------------------------------------------------- transform
    def _top(self) -> MaskGuidedTop:
        if getattr(self, "_top_cache", None) is None:
            top = self._new_top(self.n_outputs_)
            top.load_state_dict(self.state_)
            self._top_cache = top.eval()
        return self._top_cache

    def crop_probabilities(self, patches: torch.Tensor, masks: torch.Tensor, head: int | None = None) -> torch.Tensor:
        """Novel-class probabilities (softmax(logits / student temperature)) of crops' un-augmented views."""
        device = runtime.device()
        tokens, keep = self._encode(patches, masks, device)
        top = self._top().to(device)
        out = []
        with torch.no_grad():
            for s in range(0, len(tokens), 128):
                logits, _ = top(tokens[s : s + 128].to(device), keep[s : s + 128].to(device))
                h = self.best_head_ if head is None else head
                out.append(F.softmax(logits[h][:, self.n_base_classes_ :] / self.student_temperature, -1).cpu())
        top.cpu()
        return torch.cat(out) if out else torch.zeros(0, self.n_clusters)

    def transform(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> Embeddings:
        check_is_fitted(self, "state_")
        crops, patches, masks = self._crops(images, maps, regions)
        probs = self.crop_probabilities(patches, masks).numpy().astype(np.float32)
        index = np.array([c.image_index for c in crops], np.int64)
        weights = np.sqrt(np.maximum([c.area for c in crops], 1.0)).astype(np.float32)  # ≥ 1: a maskless crop still counts
        info = {
            "kind": "probabilities",
            "backbone": self.backbone,
            "best_head": self.best_head_,
            "boxes": [list(c.box) for c in crops],
            "crop_scores": [c.score for c in crops],
            "areas": [c.area for c in crops],
        }
        return Embeddings(probs, index, len(images), weights, info)

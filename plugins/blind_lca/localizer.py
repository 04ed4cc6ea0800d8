"""FCA localizers: zero-shot feature correspondence analysis per image (``fca``) and Blind-LCA's blind anomaly
localization, FCA on the residuals of a 1×1 VAE trained on the unlabelled set itself (``fca-vae``)."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, ClassVar

import numpy as np
import torch

from anomaly_clustering import runtime, training
from anomaly_clustering.backbones import DEFAULT_BACKBONE, FeatureArray, FeatureSpec, extract_features
from anomaly_clustering.data import image_size
from anomaly_clustering.features_ops import scale_per_instance
from anomaly_clustering.interfaces import Localizer, preset_init
from anomaly_clustering.records import AnomalyMaps, ImageSet, map_interior
from anomaly_clustering.validation import Interval, StrOptions, check_is_fitted, validate_params

from .torch_model import FCAParams, FeatureVAE, VAEEnsemble, VAELoss, fca_map

ENSEMBLE_SEED_STRIDE = 7919  # member k trains from seed + k·stride, so that neighbouring seeds share no member


def train_vae(
    pixels: Callable[[int, torch.Generator], torch.Tensor],
    channels: int,
    iterations: int,
    batch_pixels: int,
    lr: float = 1e-4,
    weight_decay: float = 0.1,
    kl_weight: float = 1e-3,
    latent: int = 128,
    seed: int = 42,
    device: torch.device | None = None,
    desc: str = "fca-vae training",
) -> tuple[FeatureVAE, list[float]]:
    """Train a :class:`FeatureVAE` on random pixel vectors drawn by ``pixels(batch, generator)`` (one epoch of
    ``iterations`` steps of the shared training loop); returns it (eval mode, on CPU) and the loss of every step."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + runtime.rank())  # each process of a multi-process run draws its own pixels
    vae = FeatureVAE(channels, latent=latent)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=weight_decay)
    log = training.train(
        VAELoss(vae, kl_weight),  # the loss as the model's forward, so that DDP sees every step
        opt,
        batches=lambda epoch: (pixels(batch_pixels, gen) for _ in range(iterations)),
        loss=lambda model, v: model(v),
        device=device,
        desc=desc,
        steps_per_epoch=iterations,
        flush_denormal=True,
    )
    return vae.cpu().eval(), list(log.losses[0])


class FCALocalizer(Localizer):
    """Zero-shot FCA (Ardelean & Weyrich): each 7×7 patch's sorted features against the image's own median patch.

    Per image, on per-instance 0–1 scaled backbone features; maps at the feature-grid resolution (64×64 for 512 px),
    blurred (σ = ``post_sigma``) with a zeroed ``border``; image score = the map's maximum, outside a frame of
    ``score_border`` cells when one is given (None: the whole map, the paper's).

    ``position_calibration="median"`` (off in the papers' presets): ``fit`` learns the set's per-position median map
    and every map is scored less it — what every image of the set has at one place (FCA's edge artefacts, a fixture,
    a shared rim) is not an anomaly, so the frame can be scored instead of zeroed (use with ``border=0``).
    """

    uses_global_rng: ClassVar[bool] = False  # deterministic; fca-vae seeds torch and its pixel sampler from its own seed
    parameter_constraints: ClassVar[dict[str, list]] = {
        "patch_size": [Interval(1, None, "left", integer=True)], "border": [Interval(0, None, "left", integer=True)],
        "position_calibration": [StrOptions({"none", "median"})],
        "score_border": [None, Interval(0, None, "left", integer=True)],
    }

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        backbone_weights: str | None = None,
        input_size: int = 512,
        layers: tuple[str, ...] = (),
        patch_size: int = 7,
        sigma_p: float = 3.0,
        sigma_s: float = 1.0,
        post_sigma: float = 1.0,
        border: int = 5,
        chunk_elements: int = 1 << 19,
        position_calibration: str = "none",
        score_border: int | None = None,
    ):
        self.backbone = backbone
        self.backbone_weights = backbone_weights
        self.input_size = input_size
        self.layers = layers
        self.patch_size = patch_size
        self.sigma_p = sigma_p
        self.sigma_s = sigma_s
        self.post_sigma = post_sigma
        self.border = border
        self.chunk_elements = chunk_elements
        self.position_calibration = position_calibration
        self.score_border = score_border

    # -- shared helpers -------------------------------------------------------------------------------------------
    def _spec(self) -> FeatureSpec:
        return FeatureSpec(self.backbone, tuple(self.layers), self.input_size, self.backbone_weights)

    def _params(self) -> FCAParams:
        return FCAParams(self.patch_size, self.sigma_p, self.sigma_s, self.post_sigma, self.border, self.chunk_elements)

    def _fca_input(self, scaled: torch.Tensor) -> torch.Tensor:
        """What FCA analyses, from B×C×H×W scaled features (here: the features themselves)."""
        return scaled

    def _score(self, images: ImageSet, feats: FeatureArray, desc: str) -> tuple[np.ndarray, float]:
        """FCA maps (N×h×w) of every image and the seconds spent.

        On the CPU the images are spread over one worker thread per torch thread, each running single-threaded
        (NumPy's sort and torch's kernels release the GIL): FCA's many small passes scale that way, not through
        intra-op threads (2 cores: 0.093 s / image against 0.138 s with two intra-op threads, 152×64×64)."""
        n, _, h, w = feats.shape
        share = runtime.rank_share(n)  # all of them in a one-process run; this process's block otherwise
        maps = torch.empty((len(share), h, w), dtype=torch.float32)
        params, device = self._params(), runtime.device()

        @torch.no_grad()  # grad mode is per thread: the workers need it too
        def one(i: int) -> torch.Tensor:
            x = scale_per_instance(feats[i][None].to(device))
            return fca_map(self._fca_input(x)[0], params).cpu()

        workers = torch.get_num_threads() if device.type == "cpu" else 1
        start = time.perf_counter()
        with torch.no_grad():
            if workers <= 1:
                for j, i in enumerate(runtime.progress(share, desc=desc, unit="img")):
                    maps[j] = one(i)
            else:
                torch.set_num_threads(1)
                try:
                    with ThreadPoolExecutor(workers) as pool:
                        results = pool.map(one, share)
                        for j, m in enumerate(runtime.progress(results, desc=desc, total=len(share), unit="img")):
                            maps[j] = m
                finally:
                    torch.set_num_threads(workers)
        return runtime.gather_rows(maps, n).numpy(), time.perf_counter() - start

    def _image_scores(self, maps: np.ndarray) -> np.ndarray:
        """Per image, the map's maximum outside a ``score_border``-cell frame (the whole map when None or 0, or when
        the frame would leave nothing)."""
        return map_interior(maps, self.score_border).reshape(len(maps), -1).max(axis=1)

    def _records(self, images: ImageSet, maps: np.ndarray, info: dict) -> AnomalyMaps:
        sizes = np.array([image_size(p) for p in images.paths], np.int64).reshape(len(images), 2)
        if self.score_border:  # the frame the scores leave out: the representations leave it out too (AnomalyMaps.scored_maps)
            info = {**info, "score_border": int(self.score_border)}
        return AnomalyMaps(maps, self._image_scores(maps), sizes, info)

    # -- position calibration -------------------------------------------------------------------------------------
    def _learn_positions(self, maps: np.ndarray) -> None:
        """Learn the set's per-position median map (h×w) from its raw maps, when calibration is on."""
        if self.position_calibration == "median":
            self.position_median_ = np.median(maps, axis=0).astype(np.float32)

    def _calibrated(self, maps: np.ndarray) -> np.ndarray:
        """The maps less the learned per-position median (as they are with calibration off)."""
        if self.position_calibration == "none":
            return maps
        check_is_fitted(self, "position_median_")
        if maps.shape[1:] != self.position_median_.shape:
            raise ValueError(f"{type(self).__name__}: maps of grid {maps.shape[1:]} cannot be calibrated by the "
                             f"{self.position_median_.shape} per-position median learned in fit (same input_size needed)")
        return maps - self.position_median_[None]

    def _raw_maps(self, images: ImageSet) -> tuple[np.ndarray, dict]:
        """This localizer's uncalibrated maps of ``images`` and the seconds spent on features and FCA."""
        start = time.perf_counter()
        feats = extract_features(images, self._spec())
        t_feat = time.perf_counter() - start
        maps, t_fca = self._score(images, feats, self._method())
        return maps, {"features_s": t_feat, "fca_s": t_fca}

    def _method(self) -> str:
        return "fca"

    def _info(self, timings: dict) -> dict:
        info = {"method": self._method(), "backbone": self.backbone, "input_size": self.input_size, "timings": timings}
        if self.position_calibration != "none":
            info["position_calibration"] = self.position_calibration
        return info

    def _fit_model(self, images: ImageSet) -> None:
        """Validate the parameters and learn what scoring needs (zero-shot FCA: nothing)."""
        validate_params(self)

    def fit(self, images: ImageSet, normal_images: ImageSet | None = None) -> "FCALocalizer":
        self._fit_model(images)
        if self.position_calibration != "none":
            self._learn_positions(self._raw_maps(images)[0])
        return self

    def fit_predict(self, images: ImageSet, normal_images: ImageSet | None = None) -> AnomalyMaps:
        """Fit and score the set in one FCA pass (the calibration is learned from the same maps it corrects)."""
        self._fit_model(images)
        maps, timings = self._raw_maps(images)
        self._learn_positions(maps)
        return self._records(images, self._calibrated(maps), self._info(timings))

    def predict(self, images: ImageSet) -> AnomalyMaps:
        maps, timings = self._raw_maps(images)
        return self._records(images, self._calibrated(maps), self._info(timings))


class FCAVAELocalizer(FCALocalizer):
    """Blind-LCA's BAL: FCA on the residuals F − D(μ) of a 1×1-conv VAE trained on the unlabelled set's own features.

    The VAE (a per-pixel MLP, the same function as 1×1 convolutions) is trained on random pixel vectors of the
    per-instance scaled features of every image in the set (normal and anomalous alike: the blind setting);
    ``predict`` on new images uses the trained VAE. Layer widths follow the paper with the backbone's channel count
    as the input/hidden width and a ``latent``-wide bottleneck. ``vae_ensemble`` > 1 trains that many VAEs from
    distinct seeds and takes the residual to their mean reconstruction: steadier maps on objects, not on every set
    (the plugin README gives the figures), so the paper's single VAE stays ``fca-vae``'s; the toolkit's default
    (``fca-vae-frame``) trains three.
    """

    parameter_constraints: ClassVar[dict[str, list]] = {
        **FCALocalizer.parameter_constraints, "latent": [Interval(1, None, "left", integer=True)],
        "vae_iterations": [Interval(0, None, "left", integer=True)],
        "vae_batch_pixels": [Interval(1, None, "left", integer=True)],
        "pool_pixels": [Interval(1, None, "left", integer=True)], "lr": [Interval(0, None)],
        "weight_decay": [Interval(0, None, "left")], "kl_weight": [Interval(0, None, "left")],
        "vae_ensemble": [Interval(1, None, "left", integer=True)],
    }

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        backbone_weights: str | None = None,
        input_size: int = 512,
        layers: tuple[str, ...] = (),
        patch_size: int = 7,
        sigma_p: float = 3.0,
        sigma_s: float = 1.0,
        post_sigma: float = 1.0,
        border: int = 5,
        chunk_elements: int = 1 << 19,
        position_calibration: str = "none",
        latent: int = 128,
        vae_iterations: int = 1000,
        vae_batch_pixels: int = 1024,
        pool_pixels: int = 1 << 18,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        kl_weight: float = 1e-3,
        seed: int = 42,
        vae_ensemble: int = 1,
        score_border: int | None = None,
    ):
        super().__init__(backbone, backbone_weights, input_size, layers, patch_size, sigma_p, sigma_s, post_sigma, border, chunk_elements,
                         position_calibration, score_border)
        self.latent = latent
        self.vae_iterations = vae_iterations
        self.vae_batch_pixels = vae_batch_pixels
        self.pool_pixels = pool_pixels
        self.lr = lr
        self.weight_decay = weight_decay
        self.kl_weight = kl_weight
        self.seed = seed
        self.vae_ensemble = vae_ensemble

    def _pixel_pool(self, feats: FeatureArray) -> torch.Tensor:
        """Random scaled pixel vectors, an equal share from every image (P×C, float16 to halve the memory)."""
        n, c, h, w = feats.shape
        per_image = max(1, min(h * w, math.ceil(self.pool_pixels / n)))
        gen = torch.Generator().manual_seed(self.seed)
        pool = torch.empty(n * per_image, c, dtype=torch.float16)
        for i in runtime.progress(range(n), desc="fca-vae pixel pool", unit="img"):
            x = scale_per_instance(feats[i][None])[0].flatten(1)  # C×HW
            pick = torch.randperm(h * w, generator=gen)[:per_image]
            pool[i * per_image : (i + 1) * per_image] = x[:, pick].T.half()
        return pool

    def _fit_model(self, images: ImageSet) -> None:
        """Validate the parameters, then train the VAE on random pixel vectors of the set's own scaled features."""
        validate_params(self)
        start = time.perf_counter()
        feats = extract_features(images, self._spec())
        t_feat = time.perf_counter() - start
        start = time.perf_counter()
        pool = self._pixel_pool(feats)

        def sample(batch: int, gen: torch.Generator) -> torch.Tensor:
            return pool[torch.randint(len(pool), (batch,), generator=gen)].float()

        members, losses = [], []
        for k in range(self.vae_ensemble):
            vae, member_losses = train_vae(
                sample,
                feats.shape[1],
                self.vae_iterations,
                self.vae_batch_pixels,
                lr=self.lr,
                weight_decay=self.weight_decay,
                kl_weight=self.kl_weight,
                latent=self.latent,
                seed=self.seed + k * ENSEMBLE_SEED_STRIDE,
                device=runtime.device(),
                desc="fca-vae training" if self.vae_ensemble == 1 else f"fca-vae training {k + 1}/{self.vae_ensemble}",
            )
            members.append(vae)
            losses.append(member_losses)
        self.vae_ = members[0] if len(members) == 1 else VAEEnsemble(members).eval()
        losses = list(np.mean(losses, axis=0))
        tail = max(1, len(losses) // 20)
        self.loss_first_, self.loss_last_ = float(np.mean(losses[:tail])), float(np.mean(losses[-tail:]))
        self.fit_timings_ = {"features_s": t_feat, "vae_fit_s": time.perf_counter() - start}

    def _fca_input(self, scaled: torch.Tensor) -> torch.Tensor:
        vae: FeatureVAE = self.vae_.to(scaled.device)
        return scaled - vae.reconstruct_maps(scaled)

    def _raw_maps(self, images: ImageSet) -> tuple[np.ndarray, dict]:
        check_is_fitted(self, "vae_")
        maps, timings = super()._raw_maps(images)
        self.vae_.cpu()  # keep the pickled state device-free
        return maps, {**getattr(self, "fit_timings_", {}), "predict_features_s": timings["features_s"], "fca_s": timings["fca_s"]}

    def _method(self) -> str:
        return "fca-vae"

    def _info(self, timings: dict) -> dict:
        return {**super()._info(timings), "vae_loss": [self.loss_first_, self.loss_last_]}


class FCAVAECalibratedLocalizer(FCAVAELocalizer):
    """FCA+VAE over the whole image: no zeroed frame, each map less the set's per-position median map.

    ``border=0, position_calibration="median"``: 31 % of MTD's defect pixels lie in the 5-cell frame that the paper
    zeroes, and FCA's edge artefacts there are the same in every image of the set, so the set's median removes them."""

    __init__ = preset_init(FCAVAELocalizer.__init__, border=0, position_calibration="median")


class FCAVAEFrameLocalizer(FCAVAELocalizer):
    """The default: FCA+VAE (three VAEs) over the whole frame — the map keeps the border, scores and views read the interior.

    ``border=0, score_border=5``: the paper zeroes a 5-cell frame (40 px at 512 px) where FCA's patch statistics
    meet the image edge, and with it the defects that reach the edge (31 % of MTD's defect pixels). Here the map
    keeps the frame and only the image score — the ranking, and the binarizer's gate that reads it — leaves it out
    (the maximum of the interior: the paper's score), so an edge artefact cannot make a defect-free image look
    defective. The maps say so (``info["score_border"]``), and the representations that describe images by their
    maps read the same interior (:attr:`AnomalyMaps.scored_maps`), which is exactly ``fca-vae``'s map with the same
    VAEs. ``vae_ensemble=3``: the residual to three VAEs' mean reconstruction, whose maps vary less with the seed than
    one VAE's (the bottle's and the objects' spread; with the default classifier's power-normalised views no suite set
    loses by it: benchmarks/README.md, "2026-12-07, evening 2")."""

    __init__ = preset_init(FCAVAELocalizer.__init__, border=0, score_border=5, vae_ensemble=3)

    def _method(self) -> str:
        return "fca-vae-frame"

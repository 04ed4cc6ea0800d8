"""MEBin: planted Gaussian blobs are counted and segmented; the stable-run rule; empty masks for normal maps."""

import numpy as np

from anomaly_clustering.plugins.ncd.mebin import MEBin, count_components, erode_stack, longest_stable_run
from anomaly_clustering.records import AnomalyMaps

SIZE, SIGMA = 128, 6.0


def _blob_maps(seed: int = 0):
    """Maps with 1, 2 and 3 Gaussian blobs (peak ≈ 1) plus two normal maps (peak ≈ 0.2), and the blobs' discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    centres = [[(40, 40)], [(30, 30), (90, 95)], [(25, 100), (70, 30), (100, 95)]]
    maps, discs = [], []
    for cs in centres:
        m = 0.1 * rng.random((SIZE, SIZE)).astype(np.float32)
        disc = np.zeros((SIZE, SIZE), bool)
        for (cy, cx) in cs:
            d2 = (yy - cy) ** 2 + (xx - cx) ** 2
            m += rng.uniform(0.9, 1.0) * np.exp(-d2 / (2 * SIGMA**2))
            disc |= d2 < (1.5 * SIGMA) ** 2
        maps.append(m)
        discs.append(disc)
    for _ in range(2):
        maps.append(0.2 * rng.random((SIZE, SIZE)).astype(np.float32))
        discs.append(np.zeros((SIZE, SIZE), bool))
    maps = np.stack(maps)
    return AnomalyMaps(maps, maps.reshape(len(maps), -1).max(1), np.full((len(maps), 2), SIZE)), discs


def test_mebin_recovers_counts_and_masks():
    maps, discs = _blob_maps()
    regions = MEBin().fit_transform(maps, None)
    assert regions.info["counts"] == [1, 2, 3, 0, 0]
    for i in range(3):
        inter = (regions.masks[i] & discs[i]).sum()
        union = (regions.masks[i] | discs[i]).sum()
        assert inter / union > 0.8, (i, inter / union)
        assert len(regions.regions_of(i)) == i + 1
    assert not regions.masks[3:].any() and np.isnan(regions.thresholds[3:]).all()
    assert np.isfinite(regions.thresholds[:3]).all() and (regions.thresholds[:3] < 1.0).all()


def test_longest_stable_run_rule():
    # counts per step (high → low threshold): the 2-run (4 steps) beats the 1-run (3 steps); threshold = its last step
    assert longest_stable_run(np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 5, 7]), 4) == (2, 5, 8)
    assert longest_stable_run(np.array([0, 1, 1, 1, 2, 2, 0, 0, 0, 0, 0]), 4) == (0, -1, -1)  # zeros never count
    assert longest_stable_run(np.array([3, 3, 3, 3, 1, 1, 1, 1]), 4) == (3, 0, 3)  # tie: the higher thresholds


def test_erosion_and_plane_separated_counting():
    stack = np.zeros((2, 20, 20), bool)
    stack[0, 2:8, 2:8] = True  # one 6×6 square survives a 3×3 erosion as 4×4
    stack[1, 2:8, 2:8] = True
    stack[1, 9:15, 9:15] = True
    stack[1, 8, 8] = True  # diagonal bridge: 8-connected → still 1 component before erosion
    assert count_components(stack).tolist() == [1, 1]
    eroded = erode_stack(__import__("torch").from_numpy(stack), 3).numpy()
    assert eroded[0].sum() == 16 and count_components(eroded).tolist() == [1, 2]

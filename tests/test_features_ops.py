"""Unit tests of the shared feature-map operations (scaling, blur, eq.-2 descriptor)."""

import pytest
import torch

from anomaly_clustering.features_ops import gaussian_blur, gaussian_kernel1d, scale_per_instance, weighted_descriptor


def test_scale_per_instance_maps_each_channel_to_unit_range():
    f = torch.randn(2, 3, 5, 6) * 7 + 3
    s = scale_per_instance(f)
    flat = s.flatten(2)
    assert torch.allclose(flat.amin(2), torch.zeros(2, 3), atol=1e-6)
    assert torch.allclose(flat.amax(2), torch.ones(2, 3), atol=1e-6)
    # order within a channel is preserved
    assert torch.equal(f[0, 1].flatten().argsort(), s[0, 1].flatten().argsort())
    assert torch.all(scale_per_instance(torch.ones(1, 1, 3, 3)) == 0)


def test_gaussian_kernel_sizes_follow_reference():
    assert gaussian_kernel1d(1.0).numel() == 5
    assert gaussian_kernel1d(2.0).numel() == 7
    assert gaussian_kernel1d(2.0).sum().item() == pytest.approx(1.0)


def test_gaussian_blur_keeps_constants_and_mass_and_matches_dense_2d_conv():
    x = torch.full((1, 2, 9, 9), 3.0)
    assert torch.allclose(gaussian_blur(x, 1.0), x)
    y = torch.zeros(1, 1, 11, 11)
    y[0, 0, 5, 5] = 1.0
    out = gaussian_blur(y, 1.0)
    k = gaussian_kernel1d(1.0)
    assert torch.allclose(out[0, 0, 3:8, 3:8], torch.outer(k, k), atol=1e-6)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
    # reflect padding: an edge impulse keeps its mass better than zero padding would, and shape is unchanged
    r = torch.randn(2, 3, 7, 8)
    assert gaussian_blur(r, 2.0).shape == r.shape
    assert torch.equal(gaussian_blur(r, 0.0), r)


def test_weighted_descriptor_picks_the_anomalous_feature():
    f = torch.zeros(1, 4, 16, 16)
    f[0, 2, 10:13, 3:6] = 5.0  # a distinct feature patch
    maps = torch.zeros(1, 16, 16)
    maps[0, 11, 4] = 0.1  # far above τ: the softmax puts almost all weight there
    d = weighted_descriptor(f, maps, tau=0.002, blur_sigma=2.0)
    assert d.shape == (1, 4)
    assert d[0, 2] > 1.0 and torch.allclose(d[0, [0, 1, 3]], torch.zeros(3), atol=1e-6)
    # uniform maps give the mean of centred features: zero
    assert torch.allclose(weighted_descriptor(f, torch.zeros(1, 16, 16)), torch.zeros(1, 4), atol=1e-5)


def test_weighted_descriptor_resizes_maps_bilinearly():
    torch.manual_seed(0)
    f = torch.randn(2, 3, 8, 8)
    small = torch.rand(2, 8, 8)
    big = small.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # 2×2 blocks: bilinear ÷2 gives them back
    a = weighted_descriptor(f, small, tau=0.05)
    b = weighted_descriptor(f, big, tau=0.05)
    assert a.shape == b.shape == (2, 3)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, weighted_descriptor(f, big.flip(1), tau=0.05), atol=1e-3)
    with pytest.raises(ValueError):
        weighted_descriptor(f, small[0])


def test_nearest_centroid_skips_empty_clusters_and_matches_brute_force():
    import numpy as np

    from anomaly_clustering.features_ops import nearest_centroid

    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(50, 4)), rng.normal(size=(5, 4))
    brute = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(nearest_centroid(x, c, chunk=7), brute)
    c[brute[0]] = np.inf  # an empty cluster's centroid is never chosen
    assert brute[0] not in nearest_centroid(x, c)

"""How a plugin author tests plugins: the conformance kit of anomaly-clustering, from plain pytest."""

from acme_anomaly_plugins.clusterer import CosineAgglomerative
from acme_anomaly_plugins.localizer import GradientLocalizer

from anomaly_clustering.testing import check_clusterer, check_localizer


def test_gradient_localizer_conforms():
    maps = check_localizer(GradientLocalizer, input_size=64)
    assert maps.maps.shape[1:] == (64, 64)


def test_cosine_clusterer_conforms():
    check_clusterer(CosineAgglomerative)

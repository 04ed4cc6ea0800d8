"""Combined localizer (``fca-mutual``): FCA+VAE's within-image evidence and mutual scoring's across-set evidence,
each on its set's own scale (median / MAD over the set), averaged: a defect FCA misses but no other image has, or
one FCA sees that other images share, still shows; an object's outline, bright in FCA's map and shared by every
image, is halved (issue #19).

Usage (Python)::

    from anomaly_clustering.data import load_image_set
    from anomaly_clustering.plugins.combined import CombinedLocalizer

    images = load_image_set("my_images/")
    maps = CombinedLocalizer(members=("fca-vae", "mutual"), seed=0).fit_predict(images)

Usage (CLI): ``anomaly-cluster fit --data my_images/ --localizer fca-mutual``.
"""

from .localizer import CombinedLocalizer, FCANearestLocalizer

__all__ = ["CombinedLocalizer", "FCANearestLocalizer"]

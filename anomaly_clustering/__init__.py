"""anomaly-clustering: localize anomalies in a folder of unlabelled images and group the images by defect type.

Python, the way ``anomaly-cluster fit`` works on the command line::

    from anomaly_clustering import AnomalyClustering, load_run

    model = AnomalyClustering(localizer="fca", classifier="anomaly-context", n_clusters=4, seed=0)
    result = model.fit("images/")            # a folder (searched recursively) or an ImageSet
    result.labels                            # one cluster per image (0…K−1)
    result.scores, result.maps, result.masks # anomaly score, N×H×W map and binary mask per image
    result.to_dataframe()                    # one row per image (pandas)
    result.stability.score                   # how far refits on random 80 % subsets agree with the clusters
    result.save("runs/x")                    # a run folder: anomaly-cluster evaluate / report / predict read it
    load_run("runs/x").predict("new_images/").labels

Stages: Localizer → Binarizer → Representation → Clusterer (the interfaces below), found by name through entry
points (``anomaly-cluster list``); a *classifier* names a preset of the last three. Options are merged by
:func:`resolve_config`, the same rule for the API, the CLI and the benchmark.
"""

from .api import AnomalyClustering, ClusteringResult, FittedRun, Prediction, load_run
from .config import PipelineConfig, StageSpec, resolve_config
from .interfaces import Binarizer, ClassifierPreset, Clusterer, Localizer, Representation
from .records import AnomalyMaps, Clustering, Embeddings, ImageSet, Region, Regions
from .stability import ClusterStability, cluster_stability

__all__ = [
    "AnomalyClustering", "ClusteringResult", "Prediction", "FittedRun", "load_run",
    "resolve_config", "PipelineConfig", "StageSpec",
    "Localizer", "Binarizer", "Representation", "Clusterer", "ClassifierPreset",
    "ImageSet", "AnomalyMaps", "Regions", "Region", "Embeddings", "Clustering", "ClusterStability", "cluster_stability",
]

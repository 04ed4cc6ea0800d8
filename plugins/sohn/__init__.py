"""Sohn et al., *Anomaly Clustering* (WACV 2023): the Average, Max Hausdorff and Weighted Average baselines
(representations + presets). ``average`` is the floor every clustering figure is compared with."""

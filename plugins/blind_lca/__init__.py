"""Representations from blind-lca.txt and Sohn et al.'s anomaly-clustering baselines."""

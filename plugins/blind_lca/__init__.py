"""Representations from Blind-LCA (Ardelean & Weyrich) and Sohn et al.'s anomaly-clustering baselines."""

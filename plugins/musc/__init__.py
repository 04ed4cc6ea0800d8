"""MuSc: zero-shot anomaly maps by mutual scoring of the unlabelled images (Li et al., ICLR 2024)."""

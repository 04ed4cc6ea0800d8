"""Blind-LCA (Ardelean & Weyrich): FCA localizers (``fca``, ``fca-vae``; ``torch_model.py``), the S4 quantile
heuristic binarizer, the eq. 2 weighted descriptor and the contrastive head (representations), presets."""

"""FCA-based blind anomaly localizers: zero-shot FCA (`fca`) and Blind-LCA's FCA on 1×1-VAE residuals (`fca-vae`)."""

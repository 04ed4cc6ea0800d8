"""AnomalyNCD (Huang et al.): MEBin crops, a mask-guided ViT trained by self-distillation, region merging."""

"""AnomalyNCD (anomalyncd.txt): MEBin crops, a mask-guided ViT trained by self-distillation, region merging."""

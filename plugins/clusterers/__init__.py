"""Clusterers: embeddings → labels, wrapping scikit-learn."""

"""Multi-view classifier: whole-image deep texture statistics beside full-resolution anomaly crops, with normal-first
and consensus (co-association) clusterers; built to hold on every suite set rather than on one (issue #21)."""

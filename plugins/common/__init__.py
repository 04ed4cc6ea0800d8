"""Generic stages any method family uses: the otsu, fixed and oracle binarizers, the scikit-learn clusterers and the
color-stats localizer (the network-free baseline)."""

"""Analysis of a run directory: per-stage metrics, the verdict and the PTU recommendation."""

"""Face toolkit: detection, alignment, embedders, attribute classifiers (kept import-light)."""

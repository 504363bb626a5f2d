"""Foundations shared by every layer: class names, errors, atomic file writing, metrics, objectives,
data loading and augmentation, the split, outlier screening and the run-folder layout.

Nothing here imports from :mod:`members`, :mod:`fusion` or the verbs in :mod:`ensemble`
(``tests/test_layers.py`` guards it); the package root :mod:`ensemble` holds only metadata.
"""

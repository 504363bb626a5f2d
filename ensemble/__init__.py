"""Mars terrain per-class ensemble segmenter.

An ensemble of compact one-vs-rest U-Nets (one per terrain class plus a
background detector) whose logit maps are fused into a 5-class mask.
"""
__version__ = "0.1.0"

#: Run-folder and checkpoint format version; bumped on incompatible changes.
FORMAT_VERSION = 1

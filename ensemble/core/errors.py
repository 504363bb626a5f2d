"""Exceptions the tool raises for bad input; the CLI turns them into exit status 2."""


class EnsembleError(Exception):
    """A user-facing error: the message names the file, key or option and what was expected."""


class DataError(EnsembleError):
    """A data file is missing, unreadable or not in the Kaggle Mars layout."""


class RunError(EnsembleError):
    """A run folder is missing parts, inconsistent or corrupted."""

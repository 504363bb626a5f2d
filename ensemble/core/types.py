"""Type aliases of the public surface: what a path argument or a data argument may be."""
from os import PathLike
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from .data import MarsData

#: A file or folder: a string or any ``os.PathLike`` (``pathlib.Path``).
PathArg = Union[str, "PathLike[str]"]
#: A data file: its path, the data already loaded, or ``None`` for the default (``$MARS_DATA``, ../shared/data).
DataArg = Union[str, "PathLike[str]", "MarsData", None]

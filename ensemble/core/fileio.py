"""Crash-safe file writing and hashing: a reader never sees half a file."""
import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from .errors import EnsembleError


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary file lives in the same folder so ``os.replace`` is atomic. On any
    error the temporary file is removed and an existing ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text_atomic(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path, chunk=1 << 20):
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def pickle_refusal(exc):
    """The global that a weights-only ``torch.load`` refused to unpickle, if ``exc`` is that refusal, else ``None``.

    torch's own message spans many lines, with terminal escapes, and explains how to load the file anyway.
    """
    text = str(exc)
    if "Weights only load failed" not in text:
        return None
    match = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    return match.group(1) if match else "an object that is not a tensor or a plain value"


def unusable_output(path, folder=False, writable=True):
    """Why ``path`` cannot receive what a verb writes, or ``None`` when it can.

    ``folder``: the path is to be a folder (made when missing), else a file (replaced when present). Checked
    without writing anything: an existing path of the other kind, or a missing one whose nearest existing
    ancestor is a file (nothing can be made under it) or, with ``writable``, a folder the user may not write into.
    """
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            return "is a file"
        if not folder and path.is_dir():
            return "is a folder"
        home = path if folder else path.parent
    else:
        # the nearest ancestor that exists: a file there (``notes.txt/out``) leaves no room for a folder
        home = next((p for p in path.parents if os.path.lexists(p)), Path("."))
        if not home.is_dir():
            return f"{home} is a file, so nothing can be created under it"
    if writable and not os.access(home, os.W_OK | os.X_OK):
        return f"{home} is not a folder this user may write into"
    return None


def check_output(option, path, expected, folder=False):
    """Refuse, before any work, an output ``path`` given as ``option`` that cannot be written (:func:`unusable_output`):
    one :class:`~ensemble.core.errors.EnsembleError` line naming the option and ``expected``."""
    reason = unusable_output(path, folder)
    if reason is not None:
        raise EnsembleError(f"{option} {path}: {reason}; expected {expected}")

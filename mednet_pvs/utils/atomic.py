"""Atomic file output: write to a temporary name in the destination folder, then rename.

A reader (or a rerun after a killed job) therefore sees either the previous complete file or the
new complete file, never a half-written one. ``os.replace`` is atomic on POSIX file systems when
source and destination are in the same folder, which is why the temporary file lives there.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "create_once",
    "save_nifti",
    "write_json",
    "write_text",
    "write_tsv",
]

_DOUBLE_EXTENSIONS = (".nii.gz", ".tar.gz")


def _extension(name: str) -> str:
    for ext in _DOUBLE_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` when the block succeeds.

    The temporary name keeps the extension (libraries such as nibabel pick the format from it) and
    starts with a dot, so BIDS tools ignore it. On any exception the temporary file is removed and
    ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=f".tmp{_extension(final.name)}", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600 files; outputs get the permissions a plain open() would give
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_tsv(path: str | os.PathLike[str], table: Any) -> Path:
    """Atomically write a pandas DataFrame as a BIDS TSV (tab separated, ``n/a`` for missing).

    Ten significant digits keep volumes of millions of mm^3 exact (``%g`` would print 1.23457e+06).
    """
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.10g", lineterminator="\n")
    return Path(path)


def save_nifti(img: Any, path: str | os.PathLike[str]) -> Path:
    """Atomically save a nibabel image."""
    import nibabel as nib

    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


def create_once(path: str | os.PathLike[str], text: str) -> bool:
    """Create ``path`` with ``text`` unless it already exists; safe when several jobs race.

    The content goes to a private temporary file first and is then hard-linked to the final name;
    ``os.link`` fails if the name exists, so exactly one writer wins and nobody ever sees a partial
    file. Returns True when this call created the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp_name, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    finally:
        Path(tmp_name).unlink(missing_ok=True)

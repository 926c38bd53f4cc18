"""Atomic file output: write to a temporary name in the destination folder, then rename.

A reader (or a rerun after a killed job) therefore sees either the previous complete file or the
new complete file, never a half-written one. ``os.replace`` is atomic on POSIX file systems when
source and destination are in the same folder, which is why the temporary file lives there.

Temporary names record their writer (``.<name>.<host>-<pid>.<random>.tmp<ext>``), so that
:func:`remove_stale_temporaries` can delete those a killed process left behind without touching
the ones a live process is still writing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "create_once",
    "remove_stale_temporaries",
    "save_nifti",
    "write_json",
    "write_text",
    "write_tsv",
]

LOGGER = logging.getLogger(__name__)

_DOUBLE_EXTENSIONS = (".nii.gz", ".tar.gz")
#: ``.<final name>.<host>-<pid>.<mkstemp's random part>.tmp[<extension>]``
_TEMPORARY_NAME = re.compile(r"^\.(?P<final>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.\w+\.tmp[.\w]*$")
#: A temporary nobody has modified for this long is stale whoever wrote it (other hosts, old names).
STALE_AFTER_S = 24 * 3600.0


def _extension(name: str) -> str:
    for ext in _DOUBLE_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname()) or "host"


def _temporary(final: Path, suffix: str) -> Path:
    """Create an empty private temporary file beside ``final`` whose name says who writes it."""
    fd, name = tempfile.mkstemp(
        prefix=f".{final.name}.{_host()}-{os.getpid()}.", suffix=suffix, dir=final.parent
    )
    os.close(fd)
    return Path(name)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """Delete temporary files of :func:`atomic_path`/:func:`create_once` whose writer is gone.

    A temporary is stale when it was written on this host by a process that no longer runs (a
    killed job), or when it has not been modified for :data:`STALE_AFTER_S` (another host's job,
    or a name without a writer). Temporaries of running processes are kept. Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host, now, removed = _host(), time.time(), []
    for path in folder.glob("**/.*.tmp*" if recursive else ".*.tmp*"):
        match = _TEMPORARY_NAME.match(path.name)
        try:
            if not path.is_file() or path.is_symlink():
                continue
            stale = now - path.stat().st_mtime > STALE_AFTER_S
            if match and match["host"] == host:
                stale = stale or not _pid_running(int(match["pid"]))
            if stale:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # removed meanwhile (renamed into place by its writer)
            continue
    if removed:
        LOGGER.info("removed %d stale temporary file(s) of killed runs under %s", len(removed), folder)
    return removed


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
    ``final`` is untouched; an ``OSError`` without a file name (a full disk while writing) is given
    ``final``'s name, so that the message says which output could not be written.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary(final, f".tmp{_extension(final.name)}")
    except OSError as exc:
        raise _with_file_name(exc, final) from exc
    try:
        # mkstemp creates 0600 files; outputs get the permissions a plain open() would give
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _with_file_name(exc, final) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _with_file_name(exc: OSError, final: Path) -> OSError:
    if exc.filename is not None or exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror, str(final))


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary(path, ".tmp")
    except OSError as exc:
        raise _with_file_name(exc, path) from exc
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError as exc:
        raise _with_file_name(exc, path) from exc
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return True

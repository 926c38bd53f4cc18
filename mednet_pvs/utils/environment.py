"""Run-time environment for clusters and containers, where HOME may be read-only or not bound."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["ensure_matplotlib_config_dir"]

LOGGER = logging.getLogger(__name__)


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return path.is_dir() and os.access(path, os.W_OK)


def _matplotlib_default_dirs() -> list[Path]:
    """The folders matplotlib writes its configuration and font cache to (its own rules)."""
    if os.environ.get("MPLCONFIGDIR"):
        return [Path(os.environ["MPLCONFIGDIR"])]
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no passwd entry (possible in containers)
        return []
    if not sys.platform.startswith(("linux", "freebsd")):
        return [home / ".matplotlib"]
    config = os.environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    cache = os.environ.get("XDG_CACHE_HOME") or str(home / ".cache")
    return [Path(config) / "matplotlib", Path(cache) / "matplotlib"]


def ensure_matplotlib_config_dir() -> Path | None:
    """Point matplotlib (``MPLCONFIGDIR``) at a per-user temporary folder when its own cannot be written.

    With a read-only or unbound HOME, matplotlib creates a new temporary folder in every process and
    rebuilds its font cache there (seconds per report, one warning per process). Setting the folder
    once here, before the workers start, lets every process of the run share one cache. Returns the
    folder chosen, or None when matplotlib's folders are writable.
    """
    defaults = _matplotlib_default_dirs()
    if defaults and all(_writable_dir(path) for path in defaults):
        return None
    fallback = Path(tempfile.gettempdir()) / f"mednet-pvs-{os.getuid()}" / "matplotlib"
    if not _writable_dir(fallback):
        return None  # matplotlib's own fallback (a temporary folder per process) still works
    os.environ["MPLCONFIGDIR"] = str(fallback)
    LOGGER.info("matplotlib's folders are not writable (read-only HOME?); using %s", fallback)
    return fallback

"""Load the pickles of published nnU-Net v1 models without executing foreign code.

nnU-Net v1 stores weights as ``*.model`` (``torch.save`` of a dict) and plans as ``*.pkl`` (plain
pickle). Unpickling can call any importable function, so a tampered file could run code on load.
Both loaders here accept only the handful of globals that genuine files contain (listed in the
nnU-Net v1 fixture MANIFEST: ``OrderedDict`` and numpy's array/scalar/dtype reconstructors) and
refuse anything else with :class:`UnsafePickleError`, naming the file and the global. ``trust=True``
(the ``--trust-pickle`` flag) lifts the restriction for files the user vouches for.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mednet_pvs.errors import ModelError

__all__ = ["SAFE_PICKLE_GLOBALS", "UnsafePickleError", "load_checkpoint", "load_pickle"]

LOGGER = logging.getLogger(__name__)

#: (module, name) pairs a plans/.model.pkl file may reference; numpy 2 writes ``numpy._core``.
SAFE_PICKLE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("collections", "OrderedDict"), ("numpy", "ndarray"), ("numpy", "dtype")}
    | {
        (core, name)
        for core in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    }
)

_TRUST_HINT = "If you trust this file completely, rerun with --trust-pickle (it may execute code)."


class UnsafePickleError(ModelError):
    """A pickle references a global outside the allowed list."""

    def __init__(self, path: str | Path, global_name: str) -> None:
        self.path = str(path)
        self.global_name = global_name
        super().__init__(
            f"{path}: refusing to unpickle the global {global_name!r}; published nnU-Net v1 files only "
            f"reference OrderedDict and numpy arrays/scalars/dtypes, so this file may be tampered with. "
            f"{_TRUST_HINT}"
        )


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in SAFE_PICKLE_GLOBALS:
            raise UnsafePickleError(self._path, f"{module}.{name}")
        return super().find_class(module, name)


def load_pickle(path: str | Path, *, trust: bool = False) -> Any:
    """Unpickle ``path`` allowing only :data:`SAFE_PICKLE_GLOBALS` (everything when ``trust``)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            if trust:
                return pickle.load(handle)
            return _RestrictedUnpickler(handle, path).load()
    except UnsafePickleError:
        raise
    except (
        OSError,
        EOFError,
        pickle.UnpicklingError,
        AttributeError,
        ImportError,
        ValueError,
        TypeError,
    ) as exc:
        raise ModelError(f"{path}: cannot be read as an nnU-Net pickle ({exc})") from exc


def _checkpoint_safe_globals() -> list[Any]:
    """Extra globals torch's weights-only unpickler needs for nnU-Net v1 ``.model`` files."""
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 / numpy 1
    allowed: list[Any] = [np.ndarray, np.dtype]
    for name in ("scalar", "_reconstruct"):
        function = getattr(core.multiarray, name)
        allowed += [(function, f"{package}.multiarray.{name}") for package in ("numpy.core", "numpy._core")]
    # numpy >= 1.25 pickles dtypes through their DType classes (Float32DType, ...).
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [
            getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType") and name[0].isupper()
        ]
    return allowed


_GLOBAL_IN_MESSAGE = re.compile(r"(?:GLOBAL|global:?)\s+([\w.]+)", re.IGNORECASE)


def load_checkpoint(path: str | Path, *, trust: bool = False) -> dict[str, Any]:
    """Load an nnU-Net v1 ``.model`` checkpoint on the CPU with torch's weights-only unpickler."""
    path = Path(path)
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(_checkpoint_safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        match = _GLOBAL_IN_MESSAGE.search(str(exc))
        if match:
            raise UnsafePickleError(path, match.group(1)) from None
        raise ModelError(
            f"{path}: cannot be loaded as a weights-only checkpoint ({exc}). {_TRUST_HINT}"
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ModelError(f"{path}: cannot be read as a PyTorch checkpoint ({exc})") from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ModelError(f"{path}: not an nnU-Net v1 checkpoint (no 'state_dict' entry)")
    return checkpoint

"""Find model directories by name or path.

Lookup order for a name: the models bundled in the package (``mednet_pvs/data/models``), then
``$MEDNET_PVS_HOME/models`` (default ``~/.cache/mednet-pvs/models``). Anything containing a path
separator, or an existing folder, is taken as a path; a bare name that is both a folder here and a
stored model is logged as a warning, since the folder wins.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mednet_pvs.errors import ModelError
from mednet_pvs.models.card import CARD_NAME, ModelCard

__all__ = [
    "BUNDLED_MODELS_DIR",
    "DEFAULT_MODEL",
    "ResolvedModel",
    "default_model_name",
    "list_models",
    "models_home",
    "resolve_model",
]

BUNDLED_MODELS_DIR = Path(__file__).resolve().parent.parent / "data" / "models"
#: Name of the bundled default model (docs/training.md: trained on synthetic phantoms only).
DEFAULT_MODEL: str | None = "mednet-pvs-synth-s16"
LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedModel:
    """A model directory with its card and where it was found."""

    path: Path
    card: ModelCard
    origin: str  # "bundled", "user" or "path"


def models_home() -> Path:
    """The user's model store: ``$MEDNET_PVS_HOME/models`` or ``~/.cache/mednet-pvs/models``."""
    home = os.environ.get("MEDNET_PVS_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "mednet-pvs"
    return base / "models"


def default_model_name() -> str | None:
    """The bundled default model's name, if one ships with this installation."""
    if DEFAULT_MODEL and (BUNDLED_MODELS_DIR / DEFAULT_MODEL / CARD_NAME).is_file():
        return DEFAULT_MODEL
    return None


def _search_dirs() -> list[tuple[str, Path]]:
    return [("bundled", BUNDLED_MODELS_DIR), ("user", models_home())]


def _stored(name: str) -> ResolvedModel | None:
    for origin, folder in _search_dirs():
        path = folder / name
        if (path / CARD_NAME).is_file():
            return ResolvedModel(path, ModelCard.load(path), origin)
    return None


def resolve_model(name_or_path: str | os.PathLike[str] | None) -> ResolvedModel:
    """Find a model by name (bundled, then user store) or by path, and read its card."""
    if name_or_path is None:
        name = default_model_name()
        if name is None:
            raise ModelError(
                "no model given and no default model is bundled with this installation. "
                "Point --model at a model directory (a folder with model.json and fold_<k>.safetensors), "
                "give the name of an imported model (see `mednet-pvs-models list`), or use "
                "--method frangi, which needs no weights."
            )
        name_or_path = name
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if os.sep in text or text.startswith(".") or candidate.is_dir():
        if not (candidate / CARD_NAME).is_file():
            raise ModelError(f"{candidate}: not a model directory (no {CARD_NAME} inside)")
        resolved = ResolvedModel(candidate.resolve(), ModelCard.load(candidate), "path")
        stored = _stored(text) if text == candidate.name else None
        if stored is not None and stored.path.resolve() != resolved.path:
            LOGGER.warning(
                "%r is a folder here (%s %s) and also a %s model (%s %s); using the folder (write ./%s to "
                "mean the folder and silence this warning)",
                text,
                resolved.card.name,
                resolved.card.version,
                stored.origin,
                stored.card.name,
                stored.card.version,
                text,
            )
        return resolved
    stored = _stored(text)
    if stored is not None:
        return stored
    known = ", ".join(sorted(r.card.name for r in list_models())) or "none"
    raise ModelError(
        f"model {text!r} not found among the bundled models or in {models_home()} (known: {known}). "
        "Give a path to a model directory, or import one with `mednet-pvs-models import`."
    )


def list_models() -> list[ResolvedModel]:
    """Every readable model in the bundled and user stores (user models shadowed by bundled ones skipped)."""
    found: dict[str, ResolvedModel] = {}
    for origin, folder in _search_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if (path / CARD_NAME).is_file() and path.name not in found:
                try:
                    found[path.name] = ResolvedModel(path, ModelCard.load(path), origin)
                except ModelError:
                    continue
    return list(found.values())

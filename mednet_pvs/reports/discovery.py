"""Find one participant's outputs in the derivative folder, and what is known about how they were made.

Reports are built from files alone (so ``--reports-only`` can regenerate them): the derivatives of
each image, their JSON sidecars, the run configuration saved under ``sub-<label>/log/<run-id>/``,
and the raw source image found through the sidecars' BIDS URIs and ``dataset_description.json``'s
``DatasetLinks``. Values passed explicitly by the caller take precedence over all of these.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import tomllib

from mednet_pvs.errors import MednetPVSError
from mednet_pvs.stats.outputs import DERIVATIVE_SUFFIXES

__all__ = ["ImageOutputs", "ReportInputError", "discover_images", "image_facts", "read_json"]

LOGGER = logging.getLogger(__name__)


class ReportInputError(MednetPVSError):
    """A report cannot be made: its inputs are missing; the message names the folder and the reason."""


@dataclass
class ImageOutputs:
    """The derivatives of one source image: ``folder/<prefix><suffix>`` for each kind that exists."""

    prefix: str  # the source's entities, e.g. sub-01_ses-1_acq-hr
    folder: Path
    anatomical: Path | None = None  # the source image in the raw dataset, for overlays
    provenance: dict[str, Any] = field(default_factory=dict)

    def path(self, kind: str) -> Path | None:
        """The derivative of ``kind`` (a key of ``DERIVATIVE_SUFFIXES``), None when absent."""
        candidate = self.folder / f"{self.prefix}{DERIVATIVE_SUFFIXES[kind]}"
        return candidate if candidate.is_file() else None

    def sidecar(self, kind: str) -> dict[str, Any]:
        """The JSON sidecar of derivative ``kind`` ({} when absent or unreadable)."""
        name = f"{self.prefix}{DERIVATIVE_SUFFIXES[kind]}"
        stem = name.removesuffix(".nii.gz").removesuffix(".tsv")
        return read_json(self.folder / f"{stem}.json")

    @property
    def entities(self) -> dict[str, str]:
        return dict(pair.split("-", 1) for pair in self.prefix.split("_") if "-" in pair)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; {} (with a warning for unreadable files) when it is not one."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        LOGGER.warning("%s: ignored, not readable JSON (%s)", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _dataset_links(output_dir: Path) -> dict[str, Path]:
    links = read_json(output_dir / "dataset_description.json").get("DatasetLinks", {})
    resolved = {"": output_dir}
    for name, uri in links.items() if isinstance(links, dict) else ():
        parsed = urlparse(str(uri))
        if parsed.scheme in ("", "file"):
            resolved[name] = Path(unquote(parsed.path))
    return resolved


def _source_image(sources: Any, links: Mapping[str, Path]) -> Path | None:
    """The first NIfTI source outside the derivatives (``bids:<dataset>:<path>`` resolved by name)."""
    for uri in sources if isinstance(sources, list) else ():
        if not isinstance(uri, str) or not uri.startswith("bids:"):
            continue
        _, dataset, relative = uri.split(":", 2)
        if dataset and dataset in links and relative.endswith((".nii", ".nii.gz")):
            candidate = links[dataset] / relative
            if candidate.is_file():
                return candidate
            LOGGER.warning("source image %s (%s) not found; the report shows outputs only", candidate, uri)
    return None


def _latest_config(subject_dir: Path) -> dict[str, Any]:
    configs = sorted(subject_dir.glob("log/*/mednet-pvs.toml"))
    if not configs:
        return {}
    try:
        return tomllib.loads(configs[-1].read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        LOGGER.warning("%s: ignored (%s)", configs[-1], exc)
        return {}


def discover_images(
    output_dir: Path, subject: str, provenance: Mapping[str, Any] | None = None
) -> list[ImageOutputs]:
    """Every image of ``subject`` (label with or without ``sub-``) with region statistics in ``output_dir``.

    ``provenance`` holds run-level values and, under ``"images"``, per-image values keyed by prefix
    (see docs/reports.md); they are merged over what the sidecars and the saved configuration say.
    """
    output_dir = Path(output_dir)
    label = subject.removeprefix("sub-")
    subject_dir = output_dir / f"sub-{label}"
    suffix = DERIVATIVE_SUFFIXES["morph"]
    tables = sorted(subject_dir.glob(f"**/sub-{label}_*{suffix}")) + sorted(
        subject_dir.glob(f"**/sub-{label}{suffix}")
    )
    if not tables:
        raise ReportInputError(
            f"{subject_dir}: no region statistics (*{suffix}) for participant {label}; "
            "run the participant level before making its report"
        )
    provenance = dict(provenance or {})
    per_image = provenance.pop("images", {}) or {}
    config = _latest_config(subject_dir)
    links = _dataset_links(output_dir)
    images = []
    for table in sorted(set(tables)):
        prefix = table.name[: -len(suffix)]
        image = ImageOutputs(prefix=prefix, folder=table.parent)
        sidecars = {kind: image.sidecar(kind) for kind in DERIVATIVE_SUFFIXES}
        image.anatomical = _source_image(sidecars["morph"].get("Sources"), links) or next(
            (p for p in (_source_image(s.get("Sources"), links) for s in sidecars.values()) if p), None
        )
        image.provenance = {"config": config, "sidecars": sidecars, **provenance, **per_image.get(prefix, {})}
        images.append(image)
    return images


def _walk(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            yield str(key), value
            yield from _walk(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _walk(item)


def _find(obj: Any, *names: str) -> Any:
    """The first value in a nested structure whose key matches one of ``names`` (case-insensitive)."""
    wanted = {n.lower() for n in names}
    return next(
        (value for key, value in _walk(obj) if key.lower() in wanted and value not in (None, "")), None
    )


def image_facts(image: ImageOutputs) -> dict[str, Any]:
    """What is known about how an image was processed, under the documented keys of docs/reports.md.

    Explicit provenance first, then the sidecars, then the saved run configuration.
    """
    prov = image.provenance
    config = prov.get("config", {})
    sidecars = prov.get("sidecars", {})
    parameters = [sidecars.get("morph", {}).get("Parameters", {}), sidecars.get("mask", {})]
    model = [sidecars.get("probseg", {}), sidecars.get("mask", {}).get("Method", {})]
    regions = sidecars.get("regions", {})

    def pick(key: str, *fallbacks: Any) -> Any:
        if prov.get(key) not in (None, ""):
            return prov[key]
        return next((value for value in fallbacks if value not in (None, "")), None)

    contrast = None
    if image.anatomical is not None:
        contrast = image.anatomical.name.split(".")[0].rsplit("_", 1)[-1]
    skip_skull_strip = config.get("skip_skull_strip")
    return {
        "contrast": pick("contrast", contrast),
        "method": pick("method", config.get("method")),
        "model": pick("model", _find(model, "name"), config.get("model")),
        "model_version": pick("model_version", _find(model, "version")),
        "model_contrasts": pick("model_contrasts", _find(model, "contrasts")),
        "model_inverted_contrasts": pick("model_inverted_contrasts", _find(model, "inverted_contrasts")),
        "model_trained_inverted": pick("model_trained_inverted", _find(model, "contrasts_trained_inverted")),
        "model_provenance": pick("model_provenance", _find(model, "provenance")),
        "device": pick("device", _find(model, "device"), config.get("device")),
        "tta": pick("tta", _find(model, "tta"), config.get("tta")),
        "tta_mirroring": pick("tta_mirroring", _find(model, "tta_mirroring"), config.get("tta_mirroring")),
        "folds": pick("folds", _find(model, "folds")),
        "threshold": pick("threshold", _find(parameters, "threshold"), config.get("threshold")),
        "min_cluster_size_mm3": pick(
            "min_cluster_size_mm3",
            _find(parameters, "min_cluster_size_mm3", "MinClusterSizeMM3"),
            config.get("min_cluster_size"),
        ),
        "n4": pick("n4", None if config.get("skip_n4") is None else not config["skip_n4"]),
        "skull_strip": pick(
            "skull_strip",
            _find(sidecars.get("brain_mask", {}), "method", "SkullStripMethod"),
            None if skip_skull_strip is None else ("skipped" if skip_skull_strip else "yes"),
        ),
        "regions": pick("regions", _find(regions, "source", "method"), config.get("regions")),
        "registration_overlap": pick(
            "registration_overlap",
            _find(regions, "registration_overlap", "brain_mask_dice", "dice", "overlap"),
        ),
        "registration_passed": pick("registration_passed", _find(regions, "passed")),
        "ac_position_mm": pick(
            "ac_position_mm", _find([parameters, regions], "ac_position_mm", "anterior_commissure")
        ),
        "timings": pick("timings"),
        "version": pick("version", config.get("version")),
        "run_id": pick("run_id", config.get("run_id")),
    }

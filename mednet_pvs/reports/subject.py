"""The per-participant HTML report: ``sub-<label>.html`` with figures under ``sub-<label>/figures/``.

Everything comes from the files in the output folder (plus optional provenance), so the report can
be regenerated at any time (``--reports-only``). It works offline and from the file system: inline
CSS, no script, figures referenced by relative paths.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from mednet_pvs.reports import html
from mednet_pvs.reports.discovery import ImageOutputs, discover_images, image_facts
from mednet_pvs.reports.figures import (
    DisplayVolumes,
    overlay_mask,
    overlay_probability,
    overlay_regions,
    plot_cluster_histograms,
    plot_mosaic,
    plot_projections,
    plot_rating_slices,
)
from mednet_pvs.reports.methods import REFERENCES, methods_text, software_versions
from mednet_pvs.reports.qc import QCFlag, QCThresholds, qc_flags
from mednet_pvs.stats.ratings import RATED_STRUCTURES
from mednet_pvs.stats.tables import WHOLE_BRAIN
from mednet_pvs.utils.atomic import write_text

__all__ = ["ImageOutputs", "report_path", "write_subject_report"]

LOGGER = logging.getLogger(__name__)

REGION_TABLE_COLUMNS = {
    "region": "region",
    "hemisphere": "hemisphere",
    "count": "count",
    "volume_mm3": "PVS volume (mm³)",
    "volume_fraction": "volume fraction",
    "density_per_cm3": "PVS per cm³",
    "median_cluster_volume_mm3": "median PVS (mm³)",
    "max_cluster_volume_mm3": "largest PVS (mm³)",
    "mean_length_mm": "mean length (mm)",
    "region_volume_mm3": "region volume (mm³)",
}
RATING_COLUMNS = {
    "region": "region",
    "hemisphere": "hemisphere",
    "epvs_slice_method": "slice chosen by",
    "epvs_slice_index": "slice",
    "epvs_slice_count_auto": "PVS on slice (auto)",
    "epvs_slice_rating_auto": "category (auto)",
    "epvs_maxslice_index": "slice with most PVS",
    "epvs_maxslice_count_auto": "PVS there (auto)",
    "epvs_maxslice_rating_auto": "category (auto)",
}
CENSUS_COLUMNS_SHOWN = {
    "cluster_id": "cluster",
    "region": "region",
    "hemisphere": "hemisphere",
    "volume_mm3": "volume (mm³)",
    "length_mm": "length (mm)",
    "mean_diameter_mm": "diameter (mm)",
    "centroid_x": "x (mm)",
    "centroid_y": "y (mm)",
    "centroid_z": "z (mm)",
    "max_probability": "max p",
}


def report_path(output_dir: Path, subject: str) -> Path:
    """``output_dir/sub-<label>.html``."""
    return Path(output_dir) / f"sub-{subject.removeprefix('sub-')}.html"


@dataclass
class _ImageSection:
    image: ImageOutputs
    facts: dict[str, Any]
    regions: pd.DataFrame
    census: pd.DataFrame | None
    flags: list[QCFlag]
    zooms: tuple[float, ...] | None
    figures: list[tuple[str, str]] = field(default_factory=list)  # (relative src, caption)
    errors: list[str] = field(default_factory=list)


def _read_tsv(path: Path | None) -> pd.DataFrame | None:
    if path is None:
        return None
    return pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)


def _grid(image: ImageOutputs) -> dict[str, Any]:
    """Shape, voxel size and orientation of the native grid (from any image output or the source)."""
    for path in [image.path(k) for k in ("mask", "probseg", "brain_mask", "clusters")] + [image.anatomical]:
        if path is not None:
            img = nib.load(path)
            zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
            return {
                "shape": img.shape[:3],
                "zooms": zooms,
                "orientation": "".join(nib.aff2axcodes(img.affine)),
                "oblique": bool(np.abs(nib.affines.obliquity(img.affine)).max() > np.deg2rad(1.0)),
            }
    return {}


def _figures(section: _ImageSection, figures_dir: Path, output_dir: Path) -> None:
    """Render every figure of one image; a figure that fails is reported in the page, not fatal."""
    image = section.image
    try:
        volumes = DisplayVolumes.load(image)
    except Exception as exc:  # unreadable images: the report still shows the tables
        section.errors.append(f"images could not be loaded for figures: {exc}")
        LOGGER.warning("%s: no figures (%s)", image.prefix, exc)
        return
    name = image.prefix
    pvs_panels = {"columns": 5, "panel_inches": 3.0, "weighted": True}
    jobs: list[tuple[str, str, Callable[[Path], Path | None]]] = [
        (
            "regions",
            "Brain mask (red outline) and PVS regions (colours of seg-pvsregions_dseg.tsv) on the source "
            "image.",
            lambda p: plot_mosaic(volumes, overlay_regions, p, f"{name}: brain mask and regions"),
        ),
        (
            "probability",
            "PVS probability (hot colours, shown above 0.05); slices placed where the PVS are.",
            lambda p: plot_mosaic(volumes, overlay_probability, p, f"{name}: PVS probability", **pvs_panels),
        ),
        (
            "mask",
            "Thresholded PVS mask (green) after the minimum cluster size; same slices as the probability.",
            lambda p: plot_mosaic(volumes, overlay_mask, p, f"{name}: PVS mask", **pvs_panels),
        ),
        (
            "projections",
            "3-D view: maximum-intensity projections of the probability (top) and of the mask coloured by "
            "region (bottom; grey = outside every region), with the brain outline.",
            lambda p: plot_projections(volumes, p, f"{name}: projections"),
        ),
        (
            "ratingslices",
            "Rating slices of the automated slice-level counts: region outline in blue, PVS counted in "
            "green, other PVS on the slice in orange. An estimate to compare with visual ratings, not one.",
            lambda p: plot_rating_slices(volumes, section.regions, p, f"{name}: rating slices"),
        ),
        (
            "clustersizes",
            "Distribution of PVS volumes and lengths, by region group.",
            lambda p: plot_cluster_histograms(
                section.census
                if section.census is not None
                else pd.DataFrame(columns=["region", "volume_mm3"]),
                p,
                f"{name}: PVS sizes",
            ),
        ),
    ]
    for key, caption, render in jobs:
        path = figures_dir / f"{name}_desc-{key}.png"
        try:
            written = render(path)
        except Exception as exc:  # one broken figure must not hide the others
            section.errors.append(f"figure {key} failed: {exc}")
            LOGGER.warning("%s: figure %s failed\n%s", name, key, traceback.format_exc())
            continue
        if written is not None:
            section.figures.append((html.relative(written, output_dir), caption))


def _input_table(section: _ImageSection, grid: Mapping[str, Any], output_dir: Path) -> str:
    facts = section.facts
    timings = facts.get("timings")
    items = {
        "source image": str(section.image.anatomical)
        if section.image.anatomical
        else "not found (outputs only)",
        "outputs": html.relative(section.image.folder, output_dir) + "/",
        "grid": " x ".join(map(str, grid.get("shape", ()))) or None,
        "voxel size (mm)": " x ".join(f"{z:.3g}" for z in grid.get("zooms", ())) or None,
        "orientation": (grid.get("orientation", "") + (" (oblique)" if grid.get("oblique") else "")) or None,
        "contrast": facts.get("contrast"),
        "bias correction (N4)": facts.get("n4"),
        "skull strip": facts.get("skull_strip"),
        "segmentation": facts.get("method"),
        "model": facts.get("model"),
        "model version": facts.get("model_version"),
        "model contrasts": ", ".join(map(str, facts["model_contrasts"]))
        if facts.get("model_contrasts")
        else None,
        # device and TTA are settings of a network; the Frangi filter has neither
        "device": facts.get("device") if facts.get("method") != "frangi" else None,
        "test-time augmentation": facts.get("tta") if facts.get("method") != "frangi" else None,
        "TTA mirroring": facts.get("tta_mirroring") if facts.get("tta") else None,
        "folds": ", ".join(map(str, facts["folds"]))
        if isinstance(facts.get("folds"), list)
        else facts.get("folds"),
        "threshold": facts.get("threshold"),
        "minimum cluster size (mm³)": facts.get("min_cluster_size_mm3"),
        "regions": facts.get("regions"),
        "atlas-to-subject overlap": facts.get("registration_overlap"),
        "anterior commissure (scanner mm)": (
            ", ".join(f"{v:.1f}" for v in facts["ac_position_mm"])
            if isinstance(facts.get("ac_position_mm"), list)
            else None
        ),
        "run": facts.get("run_id"),
    }
    if isinstance(timings, Mapping):
        items.update({f"time: {step} (s)": float(seconds) for step, seconds in timings.items()})
    provenance = facts.get("model_provenance")
    card = ""
    if provenance:
        card = (
            "<details><summary>Model card provenance</summary><pre>"
            f"{html.escape(json.dumps(provenance, indent=2, default=str))}</pre></details>"
        )
    return html.definition_table(items) + card


def _image_section(section: _ImageSection, grid: Mapping[str, Any], output_dir: Path) -> str:
    image = section.image
    parts = ["<h3>Quality control</h3>", html.flag_list(section.flags)]
    parts += ["<h3>Input and processing</h3>", _input_table(section, grid, output_dir)]
    parts.append("<h3>Figures</h3>")
    parts += [html.figure(src, caption, f"{image.prefix} {caption[:40]}") for src, caption in section.figures]
    if section.errors:
        parts.append("<p class='note'>" + "<br>".join(html.escape(e) for e in section.errors) + "</p>")
    morph = image.path("morph")
    parts.append("<h3>Region statistics</h3>")
    if morph is not None:
        parts.append(f"<p class='muted'>Full table: <code>{html.relative(morph, output_dir)}</code></p>")
    parts.append(html.table(section.regions, list(REGION_TABLE_COLUMNS), REGION_TABLE_COLUMNS))
    rated = section.regions[section.regions["region"].isin(RATED_STRUCTURES)]
    if "epvs_slice_method" in rated.columns and rated["epvs_slice_method"].notna().any():
        parts.append("<h3>Slice-level counts (automated estimate)</h3>")
        parts.append(
            "<p class='note'>Counts of segmented PVS intersecting the region on one axial slice, mapped to "
            "the "
            "categories of the Potter et al. (2015) rating scale (0 none, 1: 1-10, 2: 11-20, 3: 21-40, 4: "
            ">40). "
            "These are <b>automated estimates, not visual ratings</b>; see docs/statistics.md for how the "
            "slices "
            "are chosen.</p>"
        )
        parts.append(html.table(rated, list(RATING_COLUMNS), RATING_COLUMNS))
    if section.census is not None and len(section.census):
        largest = section.census.nlargest(10, "volume_mm3")
        census_path = image.path("census")
        parts.append("<h3>Largest PVS</h3>")
        parts.append(
            f"<p class='muted'>{len(section.census)} PVS in the census"
            + (f" (<code>{html.relative(census_path, output_dir)}</code>)" if census_path else "")
            + "; the ten largest, to check for lesions or merged structures:</p>"
        )
        parts.append(html.table(largest, list(CENSUS_COLUMNS_SHOWN), CENSUS_COLUMNS_SHOWN))
    sidecars = {k: v for k, v in image.provenance.get("sidecars", {}).items() if v}
    if sidecars:
        parts.append(
            "<details><summary>Metadata recorded in the JSON sidecars</summary><pre>"
            + html.escape(json.dumps(sidecars, indent=2, default=str)[:20000])
            + "</pre></details>"
        )
    return "".join(parts)


def _summary_table(sections: Sequence[_ImageSection]) -> str:
    rows = []
    for s in sections:
        by = s.regions.set_index(["region", "hemisphere"])

        def value(region: str, column: str, _by: pd.DataFrame = by) -> Any:
            key = (region, "bilateral")
            return _by.loc[key, column] if key in _by.index and column in _by.columns else None

        rows.append(
            {
                "image": f'<a href="#{html.escape(s.image.prefix)}">{html.escape(s.image.prefix)}</a>',
                "contrast": s.facts.get("contrast") or "n/a",
                "PVS": value(WHOLE_BRAIN, "count"),
                "PVS volume (mm³)": value(WHOLE_BRAIN, "volume_mm3"),
                "white matter PVS": value("white_matter", "count"),
                "basal ganglia PVS": value("basal_ganglia", "count"),
                "BG category (auto)": value("basal_ganglia", "epvs_slice_rating_auto"),
                "CSO category (auto)": value("centrum_semiovale", "epvs_slice_rating_auto"),
                "QC warnings": sum(f.level == "warning" for f in s.flags),
            }
        )
    return html.table(pd.DataFrame(rows), raw_html_columns=["image"])


def _methods(sections: Sequence[_ImageSection]) -> str:
    texts: dict[tuple[str, ...], list[str]] = {}
    cited: list[str] = []
    for s in sections:
        paragraphs, _ = methods_text(s.facts, cited)
        texts.setdefault(tuple(paragraphs), []).append(s.image.prefix)
    parts = [
        "<p class='muted'>Generated from the recorded processing; you may reuse it in a manuscript. Numbers "
        "refer to the references below.</p>"
    ]
    for paragraphs, prefixes in texts.items():
        if len(texts) > 1:
            parts.append(f"<h3>{html.escape(', '.join(prefixes))}</h3>")
        parts += [f"<p>{html.escape(paragraph)}</p>" for paragraph in paragraphs]
    references = "".join(f"<li>{html.escape(REFERENCES[k])}</li>" for k in cited)
    parts.append(f"<h3>References</h3><ol>{references}</ol>")
    return "".join(parts)


def write_subject_report(
    output_dir: Path,
    subject: str,
    images: Sequence[ImageOutputs] | None = None,
    provenance: Mapping[str, Any] | None = None,
    thresholds: QCThresholds | None = None,
) -> Path:
    """Write ``sub-<label>.html`` (and its figures) for every image of ``subject`` in ``output_dir``.

    ``images`` default to those discovered from the output folder; ``provenance`` (see
    docs/reports.md) adds or overrides what the sidecars and the saved configuration say. Raises
    :class:`~mednet_pvs.reports.discovery.ReportInputError` when the participant has no statistics.
    """
    output_dir = Path(output_dir)
    label = subject.removeprefix("sub-")
    if images is None:
        images = discover_images(output_dir, label, provenance)
    figures_dir = output_dir / f"sub-{label}" / "figures"
    sections, grids = [], []
    for image in images:
        LOGGER.info("report: %s", image.prefix)
        regions = _read_tsv(image.path("morph"))
        if regions is None:
            continue
        census = _read_tsv(image.path("census"))
        facts = image_facts(image)
        grid = _grid(image)
        section = _ImageSection(
            image=image,
            facts=facts,
            regions=regions,
            census=census,
            flags=qc_flags(regions, census, facts, grid.get("zooms"), thresholds or QCThresholds()),
            zooms=grid.get("zooms"),
        )
        _figures(section, figures_dir, output_dir)
        sections.append(section)
        grids.append(grid)
    html_sections = [("summary", "Summary", _summary_table(sections))]
    html_sections += [
        (s.image.prefix, s.image.prefix, _image_section(s, g, output_dir))
        for s, g in zip(sections, grids, strict=True)
    ]
    html_sections.append(("methods", "Methods", _methods(sections)))
    versions = pd.DataFrame(list(software_versions().items()), columns=["package", "version"])
    html_sections.append(
        (
            "software",
            "Software",
            "<p class='muted'>Versions in the environment that wrote this report.</p>" + html.table(versions),
        )
    )
    document = html.page(
        f"mednet-pvs report: sub-{label}",
        f"{len(sections)} image(s) · perivascular spaces",
        html_sections,
    )
    return write_text(report_path(output_dir, label), document)

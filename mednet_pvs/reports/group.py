"""The group report ``group_desc-pvs.html`` and the group-level entry point ``write_group_outputs``.

One self-contained file (figures embedded as PNG data URIs): per-region distributions, the images
to look at first (robust z-scores, with links to their participant reports), automated rating
categories, and PVS burden against every numeric participants.tsv column.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mednet_pvs.metrics.agreement import spearman
from mednet_pvs.reports import html
from mednet_pvs.stats.group import (
    GROUP_LONG_NAME,
    GROUP_WIDE_NAME,
    OUTLIER_Z,
    GroupTables,
    aggregate_group,
    write_group_tables,
)
from mednet_pvs.stats.tables import WHOLE_BRAIN
from mednet_pvs.utils.atomic import write_text

__all__ = ["GROUP_REPORT_NAME", "group_report_html", "write_group_outputs"]

LOGGER = logging.getLogger(__name__)

GROUP_REPORT_NAME = "group_desc-pvs.html"
#: Regions shown in the distribution and burden plots (bilateral rows).
PLOTTED_REGIONS = (
    WHOLE_BRAIN,
    "white_matter",
    "centrum_semiovale",
    "deep_white_matter",
    "basal_ganglia",
    "thalamus",
    "hippocampus",
    "midbrain",
)
MAX_SCATTER_COLUMNS = 6
MAX_LISTED_OUTLIERS = 100
MAX_FINDINGS_SHOWN = 3
MAX_OUTLIERS_OPEN = 20


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    return html.data_uri(buffer.getvalue())


def _bilateral(long: pd.DataFrame) -> pd.DataFrame:
    return long[(long["hemisphere"] == "bilateral") & long["region"].isin(PLOTTED_REGIONS)]


def _distributions(long: pd.DataFrame) -> str:
    """Small multiples: one panel per region and measure, each with its own scale."""
    data = _bilateral(long)
    regions = [r for r in PLOTTED_REGIONS if r in set(data["region"])]
    measures = (("count", "PVS count"), ("volume_mm3", "PVS volume (mm³)"))
    figure = Figure(figsize=(1.65 * len(regions), 6.4), dpi=90)
    rng = np.random.default_rng(0)  # fixed jitter: the same data always give the same figure
    for row, (column, label) in enumerate(measures):
        for col, region in enumerate(regions):
            ax = figure.add_subplot(2, len(regions), row * len(regions) + col + 1)
            subset = data[data["region"] == region]
            values = subset[column].dropna().to_numpy(float)
            ax.boxplot([values], showfliers=False, widths=0.6)
            flagged = (subset[f"{column}_robust_z"].abs() > OUTLIER_Z).to_numpy()
            jitter = 1 + rng.uniform(-0.2, 0.2, len(subset))
            ax.scatter(jitter[~flagged], subset.loc[~flagged, column], s=5, alpha=0.35, color="#2d5277")
            ax.scatter(jitter[flagged], subset.loc[flagged, column], s=12, color="#d62728")
            ax.set_xticks([])
            ax.tick_params(labelsize=7)
            ax.spines[["top", "right"]].set_visible(False)
            if row == 0:
                ax.set_title(region.replace("_", " "), fontsize=9)
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
    figure.suptitle(
        f"Per-region distributions (both hemispheres); red: |robust z| > {OUTLIER_Z}", fontsize=11
    )
    figure.tight_layout()
    return html.figure(
        _png(figure),
        "Box: median and quartiles; dots: images; each panel has its own scale.",
        "distributions",
    )


def _ratings(long: pd.DataFrame) -> str:
    column = "epvs_slice_rating_auto"
    if column not in long.columns or long[column].isna().all():
        return "<p class='muted'>No slice-level estimates (no region maps).</p>"
    data = long[
        (long["hemisphere"] == "bilateral") & long["region"].isin(["basal_ganglia", "centrum_semiovale"])
    ]
    figure = Figure(figsize=(9, 3.2), dpi=90)
    for i, region in enumerate(("basal_ganglia", "centrum_semiovale")):
        ax = figure.add_subplot(1, 2, i + 1)
        counts = data.loc[data["region"] == region, column].dropna().astype(int).value_counts()
        ax.bar(range(5), [int(counts.get(k, 0)) for k in range(5)], color="#4a90d9")
        ax.set_xticks(range(5), ["0", "1\n1-10", "2\n11-20", "3\n21-40", "4\n>40"])
        ax.set_title(f"{region.replace('_', ' ')} (automated)", fontsize=10)
        ax.set_ylabel("images")
        ax.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    return html.figure(
        _png(figure),
        "Categories implied by the automated slice counts (Potter et al. 2015 categories); estimates, not "
        "visual ratings.",
        "automated rating categories",
    )


def _numeric_participant_columns(tables: GroupTables) -> list[str]:
    columns = []
    for column in tables.participant_columns:
        values = pd.to_numeric(tables.wide[column], errors="coerce")
        if values.notna().sum() >= 3 and values.nunique() > 1:
            columns.append(column)
    return columns[:MAX_SCATTER_COLUMNS]


def _burden(tables: GroupTables) -> str:
    columns = _numeric_participant_columns(tables)
    if not columns:
        return (
            "<p class='muted'>No numeric participants.tsv column (such as age) to plot PVS burden "
            "against.</p>"
        )
    wide = tables.wide
    measures = [
        (f"{WHOLE_BRAIN}_bilateral_count", "whole-brain PVS count"),
        (f"{WHOLE_BRAIN}_bilateral_volume_mm3", "whole-brain PVS volume (mm³)"),
        ("white_matter_bilateral_count", "white-matter PVS count"),
        ("basal_ganglia_bilateral_count", "basal-ganglia PVS count"),
    ]
    measures = [m for m in measures if m[0] in wide.columns]
    figure = Figure(figsize=(3.2 * len(measures), 2.9 * len(columns)), dpi=80)
    for row, column in enumerate(columns):
        x = pd.to_numeric(wide[column], errors="coerce")
        for col, (measure, label) in enumerate(measures):
            ax = figure.add_subplot(len(columns), len(measures), row * len(measures) + col + 1)
            y = wide[measure]
            ax.scatter(x, y, s=8, alpha=0.5, color="#2d5277")
            valid = x.notna() & y.notna()
            if valid.sum() >= 3:
                rho, _ = spearman(x[valid], y[valid])
                ax.set_title(f"Spearman ρ = {rho:.2f} (n = {int(valid.sum())})", fontsize=8)
            ax.set_xlabel(column, fontsize=8)
            ax.set_ylabel(label, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    return html.figure(
        _png(figure),
        "PVS burden against the numeric columns of participants.tsv (one dot per image).",
        "PVS burden against participant variables",
    )


def _outliers(long: pd.DataFrame) -> str:
    z_columns = {"count_robust_z": "count", "volume_mm3_robust_z": "volume_mm3"}
    rows = []
    for z_column, metric in z_columns.items():
        flagged = long[long[z_column].abs() > OUTLIER_Z]
        for record in flagged.itertuples(index=False):
            rows.append(
                {
                    "image": record.image,
                    "participant_id": record.participant_id,
                    "what": f"{record.region} ({record.hemisphere}) {metric} = "
                    f"{getattr(record, metric):.4g}, "
                    f"z = {getattr(record, z_column):+.1f}",
                    "abs_z": abs(getattr(record, z_column)),
                }
            )
    if not rows:
        return f"<p>No image has a region with |robust z| above {OUTLIER_Z}.</p>"
    flagged = pd.DataFrame(rows).sort_values("abs_z", ascending=False, kind="stable")

    def strongest(findings: pd.Series) -> str:
        shown = "; ".join(findings.iloc[:MAX_FINDINGS_SHOWN])
        extra = len(findings) - MAX_FINDINGS_SHOWN
        return shown + (f"; and {extra} more" if extra > 0 else "")

    summary = (
        flagged.groupby(["image", "participant_id"], sort=False)
        .agg(max_abs_z=("abs_z", "max"), n_flags=("what", "size"), findings=("what", strongest))
        .reset_index()
        .sort_values("max_abs_z", ascending=False)
        .head(MAX_LISTED_OUTLIERS)
    )
    summary["report"] = [
        f'<a href="{html.escape(p)}.html#{html.escape(i)}">{html.escape(p)}.html</a>'
        for p, i in zip(summary["participant_id"], summary["image"], strict=True)
    ]
    columns = ["image", "report", "max_abs_z", "n_flags", "findings"]
    headers = {"max_abs_z": "max |z|", "n_flags": "flags"}
    first, rest = summary.head(MAX_OUTLIERS_OPEN), summary.iloc[MAX_OUTLIERS_OPEN:]
    parts = [
        f"<p>{summary.shape[0]} image(s) with at least one region beyond |robust z| = {OUTLIER_Z} "
        "(median/MAD "
        "within the protocol), most extreme first. Open their reports before trusting their numbers. The "
        "z-scores do not adjust for age or other covariates: an old participant may be flagged for a true "
        "high burden.</p>",
        html.table(first, columns, headers, raw_html_columns=["report"]),
    ]
    if len(rest):
        parts.append(
            f"<details><summary>{len(rest)} more</summary>"
            + html.table(rest, columns, headers, raw_html_columns=["report"])
            + "</details>"
        )
    return "".join(parts)


def _overview(tables: GroupTables) -> str:
    long = tables.long
    data = _bilateral(long)
    stats = (
        data.groupby("region", sort=False)[["count", "volume_mm3"]]
        .describe(percentiles=[0.25, 0.5, 0.75])
        .reindex([r for r in PLOTTED_REGIONS if r in set(data["region"])])
    )
    rows = []
    for region, values in stats.iterrows():
        rows.append(
            {
                "region": region,
                "images": int(values[("count", "count")]),
                "median count": values[("count", "50%")],
                "count IQR": f"{values[('count', '25%')]:.0f}-{values[('count', '75%')]:.0f}",
                "median volume (mm³)": values[("volume_mm3", "50%")],
                "volume IQR (mm³)": (
                    f"{values[('volume_mm3', '25%')]:.0f}-{values[('volume_mm3', '75%')]:.0f}"
                ),
            }
        )
    sessions = long["session_id"].dropna().nunique()
    protocols = ", ".join(sorted(long["protocol"].unique()))
    return html.definition_table(
        {
            "images": long["image"].nunique(),
            "participants": long["participant_id"].nunique(),
            "sessions": sessions or None,
            "protocols": protocols,
            "long table": GROUP_LONG_NAME,
            "wide table": GROUP_WIDE_NAME,
        }
    ) + html.table(pd.DataFrame(rows))


def group_report_html(tables: GroupTables) -> str:
    """The group report as one HTML document."""
    sections = [
        ("overview", "Overview", _overview(tables)),
        ("outliers", "Look at these first", _outliers(tables.long)),
        ("distributions", "Distributions", _distributions(tables.long)),
        ("ratings", "Slice-level estimates", _ratings(tables.long)),
        ("burden", "PVS burden and participant variables", _burden(tables)),
    ]
    return html.page("mednet-pvs group report", f"{tables.long['image'].nunique()} image(s)", sections)


def write_group_outputs(output_dir: Path, participants_tsv: Path | None = None) -> list[Path]:
    """Aggregate every participant's statistics and write the group tables, sidecars and report.

    Raises :class:`~mednet_pvs.stats.group.GroupInputError` when there is nothing to aggregate.
    """
    output_dir = Path(output_dir)
    tables = aggregate_group(output_dir, participants_tsv)
    written = write_group_tables(output_dir, tables)
    written.append(write_text(output_dir / GROUP_REPORT_NAME, group_report_html(tables)))
    return written

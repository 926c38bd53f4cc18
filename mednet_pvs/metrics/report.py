"""Write an evaluation: TSV tables with JSON column sidecars, a PNG summary and a short HTML page."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mednet_pvs import __version__
from mednet_pvs.metrics.evaluate import (
    CASE_COLUMNS,
    DISTRACTOR_COLUMNS,
    GROUP_COLUMNS,
    EvaluationResult,
    with_pvs,
)
from mednet_pvs.stats.tables import WHOLE_BRAIN
from mednet_pvs.utils.atomic import atomic_path, write_json, write_text, write_tsv

__all__ = ["summary_figure", "write_evaluation"]

_PREFIX = "evaluation"


def _sidecar(columns: dict[str, str]) -> dict[str, dict[str, str]]:
    return {name: {"Description": text} for name, text in columns.items()}


def _bilateral(table: pd.DataFrame) -> pd.DataFrame:
    return table[table.hemisphere == "bilateral"]


def summary_figure(result: EvaluationResult, path: str | Path) -> Path:
    """PNG: Dice and detection F1 per region, predicted vs reference counts and volumes."""
    matplotlib.use("Agg")  # files only, never a display
    cases = with_pvs(_bilateral(result.cases))
    regions = [r for r in dict.fromkeys(result.cases.region) if r in set(cases.region)]  # table order
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for ax, column, title in ((axes[0, 0], "dice", "Voxel Dice"), (axes[0, 1], None, "Detection F1")):
        ax.set_title(title + " (bilateral regions; cases with PVS there)")
        ax.set_ylim(0, 1.05)
        if not regions:
            ax.text(0.5, 0.5, "no PVS in reference or prediction", ha="center", transform=ax.transAxes)
            continue
        if column:
            data = [cases.loc[cases.region == r, column].dropna().to_numpy() for r in regions]
            ax.boxplot(data, tick_labels=regions, showmeans=True)
        else:
            width = 0.38
            x = np.arange(len(regions))
            for offset, name, label in (
                (-width / 2, "any_f1", "any overlap"),
                (width / 2, "iou_f1", "IoU > 0.1"),
            ):
                means = [cases.loc[cases.region == r, name].mean() for r in regions]
                ax.bar(x + offset, means, width, label=label)
            ax.set_xticks(x, regions)
            ax.legend(loc="upper right")
        ax.tick_params(axis="x", rotation=45)
    whole = _bilateral(result.cases)
    whole = whole[whole.region == WHOLE_BRAIN]
    group = result.group.set_index(["region", "hemisphere"])
    for ax, (x, y, kind, unit) in zip(
        axes[1],
        (("n_ref", "n_pred", "count", ""), ("volume_ref_mm3", "volume_pred_mm3", "volume", " (mm³)")),
        strict=True,
    ):
        ax.scatter(whole[x], whole[y], s=18)
        top = max(float(whole[[x, y]].to_numpy().max(initial=0)), 1.0) * 1.05
        ax.plot([0, top], [0, top], "k--", lw=0.8)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ccc = group.loc[(WHOLE_BRAIN, "bilateral"), f"{kind}_ccc"]
        rho = group.loc[(WHOLE_BRAIN, "bilateral"), f"{kind}_spearman_rho"]
        ax.set_title(f"Whole-brain PVS {kind}: CCC {ccc:.3f}, Spearman {rho:.3f}")
        ax.set_xlabel(f"reference {kind}{unit}")
        ax.set_ylabel(f"predicted {kind}{unit}")
    fig.suptitle(f"mednet-pvs-eval: {whole.shape[0]} cases")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def _html(result: EvaluationResult, figure: str) -> str:
    def table(frame: pd.DataFrame) -> str:
        return frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="n/a", border=0)

    whole = result.cases[result.cases.region == WHOLE_BRAIN]
    columns = [
        "participant_id",
        "session_id",
        "prediction",
        "dice",
        "hd95_mm",
        "n_ref",
        "n_pred",
        "any_f1",
        "iou_f1",
    ]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>mednet-pvs evaluation</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
        "td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style></head><body>",
        f"<h1>PVS segmentation evaluation</h1><p>mednet-pvs {html.escape(__version__)}; "
        f"{len(whole)} cases. Column definitions: {_PREFIX}.json, {_PREFIX}_group.json.</p>",
        f"<img src='{html.escape(figure)}' alt='summary figure' style='max-width:100%'>",
        "<h2>Agreement across cases</h2>",
        table(_bilateral(result.group)),
        "<h2>Whole brain, per case</h2>",
        table(whole[columns]),
    ]
    if len(result.distractors):
        parts += ["<h2>Predictions on distractors</h2>", table(result.distractors)]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_evaluation(result: EvaluationResult, out_dir: str | Path) -> list[Path]:
    """Write the evaluation tables, sidecars, figure and HTML page into ``out_dir``."""
    out_dir = Path(out_dir)
    written = [
        write_tsv(out_dir / f"{_PREFIX}.tsv", result.cases),
        write_json(out_dir / f"{_PREFIX}.json", _sidecar(CASE_COLUMNS)),
        write_tsv(out_dir / f"{_PREFIX}_group.tsv", result.group),
        write_json(out_dir / f"{_PREFIX}_group.json", _sidecar(GROUP_COLUMNS)),
    ]
    if len(result.distractors):
        written.append(write_tsv(out_dir / f"{_PREFIX}_distractors.tsv", result.distractors))
        written.append(write_json(out_dir / f"{_PREFIX}_distractors.json", _sidecar(DISTRACTOR_COLUMNS)))
    figure = summary_figure(result, out_dir / f"{_PREFIX}.png")
    written.append(figure)
    written.append(write_text(out_dir / f"{_PREFIX}.html", _html(result, figure.name)))
    return written

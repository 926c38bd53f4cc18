"""Group-level speed and memory: aggregate N participants' region tables and write the group report.

Generates N participants' ``*_desc-pvs_morph.tsv`` files (random but plausible counts and volumes,
written with the same writer as the participant level) plus a participants.tsv in a temporary
folder, then times ``aggregate_group``, ``write_group_tables`` and the HTML report separately and
prints the peak Python heap (tracemalloc) and the process's peak resident memory.

    PYTHONPATH=. python benchmarks/group_level.py --participants 1000
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from mednet_pvs.reports.group import GROUP_REPORT_NAME, group_report_html
from mednet_pvs.stats import compute_statistics, derivative_path, potter_category, write_table
from mednet_pvs.stats.columns import REGION_COLUMNS, column_sidecar
from mednet_pvs.stats.group import aggregate_group, write_group_tables
from mednet_pvs.utils.atomic import write_text

LOGGER = logging.getLogger("benchmark")


def template_table() -> pd.DataFrame:
    """A real region table (all rows and columns) from a small synthetic image."""
    shape = (30, 30, 30)
    regions = np.zeros(shape, np.uint8)
    regions[:15, :, 20:] = 1
    regions[15:, :, 20:] = 2
    regions[:15, :, 10:20] = 3
    regions[15:, :, 10:20] = 4
    regions[:15, :, :10] = 5
    regions[15:, :, :10] = 6
    mask = np.zeros(shape, bool)
    mask[5, 5, 22:26] = mask[20, 8, 3:6] = True
    return compute_statistics(mask, np.eye(4), regions, brain_mask=regions > 0).regions


def generate(root: Path, n_participants: int, seed: int = 0) -> None:
    """``n_participants`` region tables with random counts/volumes, and participants.tsv (age, sex)."""
    rng = np.random.default_rng(seed)
    template = template_table()
    ages = rng.uniform(20, 90, n_participants)
    typical = rng.uniform(5, 120, len(template))  # per region and hemisphere
    for i, age in enumerate(ages):
        table = template.copy()
        burden = np.exp(rng.normal(0.0, 0.3)) * (1 + (age - 20) / 50)
        scale = typical * burden * np.exp(rng.normal(0.0, 0.2, len(table)))
        table["count"] = rng.poisson(scale)
        table["volume_mm3"] = table["count"] * rng.uniform(5, 15, len(table))
        table["volume_in_region_mm3"] = table["volume_mm3"]
        table["region_volume_mm3"] = rng.uniform(5e3, 5e5, len(table))
        table["volume_fraction"] = table["volume_mm3"] / table["region_volume_mm3"]
        rated = table["epvs_slice_method"].notna()
        slice_counts = rng.poisson(np.where(table["region"] == "basal_ganglia", 8, 12) * burden)
        table.loc[rated, "epvs_slice_count_auto"] = slice_counts[rated.to_numpy()]
        table.loc[rated, "epvs_slice_rating_auto"] = [
            potter_category(int(c)) for c in slice_counts[rated.to_numpy()]
        ]
        if i % 97 == 0:  # a few images with an implausible burden, for the outlier list
            table["count"] *= 8
        prefix = root / f"sub-{i:04d}" / "ses-1" / "anat" / f"sub-{i:04d}_ses-1_acq-iso"
        write_table(derivative_path(prefix, "morph"), table, column_sidecar(table.columns, REGION_COLUMNS))
    participants = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:04d}" for i in range(n_participants)],
            "age": ages.round(1),
            "sex": rng.choice(["F", "M"], n_participants),
        }
    )
    participants.to_csv(root / "participants.tsv", sep="\t", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--participants", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        start = time.perf_counter()
        generate(root, args.participants)
        LOGGER.info("generated %d region tables in %.2f s", args.participants, time.perf_counter() - start)

        start = time.perf_counter()
        tables = aggregate_group(root, root / "participants.tsv")
        aggregated = time.perf_counter()
        write_group_tables(root, tables)
        written = time.perf_counter()
        write_text(root / GROUP_REPORT_NAME, group_report_html(tables))
        reported = time.perf_counter()
        LOGGER.info("long table: %d rows x %d columns", *tables.long.shape)
        LOGGER.info("wide table: %d rows x %d columns", *tables.wide.shape)
        LOGGER.info("aggregate_group:    %.2f s", aggregated - start)
        LOGGER.info("write_group_tables: %.2f s", written - aggregated)
        size_mb = (root / GROUP_REPORT_NAME).stat().st_size / 1e6
        LOGGER.info("group report HTML:  %.2f s (%.1f MB)", reported - written, size_mb)
        LOGGER.info("total:              %.2f s", reported - start)

        # Second pass under tracemalloc (which slows Python down, hence not timed).
        tracemalloc.start()
        tables = aggregate_group(root, root / "participants.tsv")
        write_group_tables(root, tables)
        write_text(root / GROUP_REPORT_NAME, group_report_html(tables))
        _, peak_heap = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        LOGGER.info(
            "peak Python heap during aggregate + tables + report (tracemalloc): %.0f MB", peak_heap / 1e6
        )
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
        LOGGER.info("peak resident memory of the whole process (incl. imports, generation): %.0f MB", rss_mb)


if __name__ == "__main__":
    main()

"""``python -m mednet_pvs.cli.bids_index BIDS_DIR DATABASE_DIR``: validate and index a dataset once.

The cluster recipes (``workflows/``) run this in one short job before the participant jobs, which
then skip validation and open the index read-only with ``--bids-database-dir DATABASE_DIR``
(docs/hpc.md). An index that already exists is reused. Exit codes: 0 indexed, 1 failure (invalid
dataset included), 2 usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mednet_pvs import __version__
from mednet_pvs.bids import build_layout
from mednet_pvs.cli.run import run_bids_validator, setup_logging
from mednet_pvs.errors import MednetPVSError, UsageError

__all__ = ["main"]

LOGGER = logging.getLogger("mednet_pvs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mednet_pvs.cli.bids_index",
        description="Build the pybids index that many mednet-pvs jobs share via --bids-database-dir.",
    )
    parser.add_argument("bids_dir", type=Path, help="the root folder of a BIDS dataset")
    parser.add_argument("database_dir", type=Path, help="index folder (created atomically when missing)")
    parser.add_argument(
        "--skip-bids-validation",
        "--skip_bids_validation",
        action="store_true",
        help="do not run the BIDS validator",
    )
    parser.add_argument("--version", action="version", version=f"mednet-pvs {__version__}")
    parser.add_argument("-v", "--verbose", dest="verbosity", action="count", default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbosity)
    if not args.bids_dir.is_dir():
        parser.error(f"bids_dir {args.bids_dir} does not exist or is not a folder")
    try:
        if not args.skip_bids_validation:
            run_bids_validator(args.bids_dir)
        layout = build_layout(args.bids_dir, args.database_dir)
    except UsageError as exc:
        parser.error(str(exc))
    except MednetPVSError as exc:
        LOGGER.error("%s", exc)
        return 1
    LOGGER.info("%s: %d participant(s) indexed", args.database_dir, len(layout.get_subjects()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

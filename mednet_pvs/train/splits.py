"""k-fold cross-validation splits by subject, fixed on disk (``splits.json``) and reused on reruns.

As nnU-Net (Isensee et al. 2021) we use scikit-learn's shuffled ``KFold`` with a fixed random state,
but over subjects rather than images, so that the sessions and contrasts of one person never sit on
both sides of a split. The file is created once (atomically, first writer wins, so parallel fold jobs
agree) and later runs read it back; a dataset that changed since is an error, not a silent reshuffle.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mednet_pvs.errors import UsageError
from mednet_pvs.utils.atomic import create_once

__all__ = ["SPLITS_NAME", "load_or_create_splits", "make_splits"]

LOGGER = logging.getLogger(__name__)

SPLITS_NAME = "splits.json"


def make_splits(subject_of_case: Mapping[str, str], n_folds: int, seed: int) -> list[dict[str, list[str]]]:
    """``n_folds`` folds of {"train": case ids, "val": case ids}; one fold means train on everything."""
    cases = sorted(subject_of_case)
    if n_folds == 1:
        return [{"train": cases, "val": []}]
    from sklearn.model_selection import KFold

    subjects = np.array(sorted(set(subject_of_case.values())))
    if len(subjects) < n_folds:
        raise UsageError(
            f"{n_folds} folds need at least {n_folds} subjects; the training data has {len(subjects)}"
        )
    folds = []
    for _, val_idx in KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(subjects):
        val_subjects = set(subjects[val_idx])
        folds.append(
            {
                "train": [c for c in cases if subject_of_case[c] not in val_subjects],
                "val": [c for c in cases if subject_of_case[c] in val_subjects],
            }
        )
    return folds


def _check(saved: dict[str, Any], cases: set[str], n_folds: int, path: Path) -> list[dict[str, list[str]]]:
    folds = saved.get("folds")
    if not isinstance(folds, list) or len(folds) != n_folds:
        found = len(folds) if isinstance(folds, list) else "no"
        raise UsageError(f"{path} holds {found} folds but --folds is {n_folds}; use another --work-dir")
    recorded = set().union(*(set(f["train"]) | set(f["val"]) for f in folds))
    if recorded != cases:
        added, removed = sorted(cases - recorded), sorted(recorded - cases)
        raise UsageError(
            f"{path} was made for other training data "
            f"(new: {added[:5] or 'none'}, gone: {removed[:5] or 'none'}); "
            "delete it to draw new splits, or use another --work-dir"
        )
    return folds


def load_or_create_splits(
    path: Path, subject_of_case: Mapping[str, str], n_folds: int, seed: int
) -> list[dict[str, list[str]]]:
    """The splits stored at ``path``, created there first if missing (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        folds = make_splits(subject_of_case, n_folds, seed)
        document = {"n_folds": n_folds, "seed": seed, "grouped_by": "subject", "folds": folds}
        if create_once(path, json.dumps(document, indent=2) + "\n"):
            LOGGER.info("wrote %d-fold splits to %s", n_folds, path)
            return folds
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read as JSON ({exc}); delete it to draw new splits") from exc
    LOGGER.info("reusing the splits in %s", path)
    return _check(saved, set(subject_of_case), n_folds, path)

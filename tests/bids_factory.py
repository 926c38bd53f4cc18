"""Generate small BIDS datasets for tests (no ../shared needed)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.conftest import make_phantom


def write_image(path: Path, img: nib.Nifti1Image | None = None, sidecar: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img if img is not None else make_phantom(seed=hash(path.name) % 1000), path)
    if sidecar is not None:
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    return path


def make_bids(root: Path, layout: dict[str, list[str]], participants: dict[str, dict] | None = None) -> Path:
    """Create ``root`` with the given files, e.g. {"01": ["anat/sub-01_T2w.nii.gz"]}.

    Paths are relative to ``sub-<label>/``; images are small phantoms.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "test", "BIDSVersion": "1.10.0", "DatasetType": "raw"})
    )
    (root / "README").write_text("Synthetic test dataset.\n")
    for subject, files in layout.items():
        for relative in files:
            write_image(root / f"sub-{subject}" / relative, sidecar={"EchoTime": 0.1})
    if participants:
        columns = sorted({k for row in participants.values() for k in row})
        lines = ["\t".join(["participant_id", *columns])]
        lines += [
            "\t".join([f"sub-{s}", *(str(row.get(c, "n/a")) for c in columns)])
            for s, row in participants.items()
        ]
        (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    return root


def oblique_affine(zooms: tuple[float, float, float] = (1.0, 1.0, 1.0), degrees: float = 15.0) -> np.ndarray:
    """An oblique affine: rotation about x and z, with the given voxel sizes."""
    a, b = np.deg2rad(degrees), np.deg2rad(degrees / 2)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(zooms)
    affine[:3, 3] = [-20.0, -30.0, -15.0]
    return affine


def lps_affine(zooms: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Left-Posterior-Superior voxel axes (DICOM-like order)."""
    affine = np.diag([-zooms[0], -zooms[1], zooms[2], 1.0])
    affine[:3, 3] = [24.0, 28.0, -20.0]
    return affine

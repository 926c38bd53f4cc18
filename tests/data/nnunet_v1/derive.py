"""Derive tests/data/nnunet_v1 from the nnU-Net v1 fixture (../shared/fixtures/nnunet_v1).

Run from the repository root: ``python tests/data/nnunet_v1/derive.py [FIXTURE_DIR]``. Model folders,
the input scan, the full-size shape manifest and the fold-0 reference segmentations are copied
unchanged; the large arrays are reduced to what the tests compare:

- ``<model>/io_subset.npz``: the fixture's ``io_pairs.npz`` without ``input`` (the tests regenerate it
  from its seed: ``RandomState(20241120).randn(1, 1, 64, 64, 64)`` rounded to float16), full-resolution
  logits on every third voxel, deep-supervision head 1 on every second voxel, heads 2-4 whole.
- ``<model>/fold0_notta.npz``: the reference run without TTA: ``p1`` = class-1 softmax (float16, as
  nnU-Net stored it) on the crop box in (z, y, x) order, and ``crop_bbox`` from ``case01.pkl``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from mednet_pvs.models.safe_pickle import load_pickle

HERE = Path(__file__).resolve().parent
INPUT_SEED = 20241120


def regenerated_input() -> np.ndarray:
    """The fixture's network input, from its seed."""
    return np.random.RandomState(INPUT_SEED).randn(1, 1, 64, 64, 64).astype(np.float16).astype(np.float32)


def main(fixture: Path) -> None:
    shutil.copyfile(fixture / "full_size_state_dict_shapes.json", HERE / "full_size_state_dict_shapes.json")
    (HERE / "input").mkdir(exist_ok=True)
    shutil.copyfile(fixture / "input" / "case01_0000.nii.gz", HERE / "input" / "case01_0000.nii.gz")
    for model in ("mednext_tiny", "generic_unet_tiny"):
        source, target = fixture / model, HERE / model
        shutil.rmtree(target / "nnUNet", ignore_errors=True)
        shutil.copytree(source / "nnUNet", target / "nnUNet", copy_function=shutil.copyfile)
        for path in (target / "nnUNet").rglob("*"):  # the fixture is read-only; keep the copy writable
            path.chmod(0o755 if path.is_dir() else 0o644)
        (target / "nnUNet").chmod(0o755)
        pairs = np.load(source / "io_pairs.npz", allow_pickle=False)
        assert np.array_equal(pairs["input"], regenerated_input()), (
            "the input seed no longer reproduces io_pairs"
        )
        np.savez_compressed(
            target / "io_subset.npz",
            logits_fold0_eval=pairs["logits_fold0_eval"][:, :, ::3, ::3, ::3],
            ds1_fold0_train=pairs["ds1_fold0_train"][:, :, ::2, ::2, ::2],
            **{f"ds{k}_fold0_train": pairs[f"ds{k}_fold0_train"] for k in (2, 3, 4)},
        )
        run = source / "reference_predictions" / "fold0_notta"
        softmax = np.load(run / "case01.npz", allow_pickle=False)["softmax"]
        bbox = np.asarray(load_pickle(run / "case01.pkl")["crop_bbox"], dtype=np.int64)
        np.savez_compressed(target / "fold0_notta.npz", p1=softmax[1], crop_bbox=bbox)
        shutil.copyfile(run / "case01.nii.gz", target / "fold0_notta_seg.nii.gz")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[3] / "shared" / "fixtures" / "nnunet_v1")

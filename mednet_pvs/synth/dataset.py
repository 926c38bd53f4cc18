"""Write phantoms as a BIDS dataset with the exact ground truth as a BIDS-Derivatives dataset.

Layout (``OUT`` is a raw BIDS dataset; the truth lives in ``OUT/derivatives/groundtruth``)::

    OUT/sub-01/anat/sub-01_T2w.nii.gz (+ .json)          acquired images, int16
    OUT/participants.tsv (+ .json)                       age, sex, burdens, seed, ...
    OUT/derivatives/groundtruth/sub-01/anat/
        sub-01_desc-pvs_mask.nii.gz                      uint8, partial-volume fraction >= threshold
        sub-01_label-PVS_probseg.nii.gz                  PVS partial-volume fraction (float32)
        sub-01_desc-pvsinstances_dseg.nii.gz             PVS id per mask voxel (table ``pvs_id``)
        sub-01_seg-pvsregions_dseg.nii.gz                PVS regions (mednet_pvs.regions.lut)
        sub-01_desc-aseg_dseg.nii.gz                     FreeSurfer-style labels of the phantom
        sub-01_desc-distractors_dseg.nii.gz              lacunes, rims, WMH, vessels, CSF
        sub-01_desc-pvs_morph.tsv                        every drawn PVS (id, region, size, centre)
        sub-01_desc-distractors_morph.tsv                every drawn distractor

Every file is written atomically; the same seed gives byte-identical files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from mednet_pvs import __version__
from mednet_pvs.regions.lut import write_lookup_table
from mednet_pvs.synth.config import SynthConfig
from mednet_pvs.synth.generator import DISTRACTOR_LABELS, Phantom, generate_subject, subject_seed
from mednet_pvs.utils.atomic import save_nifti, write_json, write_text, write_tsv

__all__ = ["GROUNDTRUTH", "subject_label", "write_dataset", "write_subject"]

LOGGER = logging.getLogger(__name__)

#: Name of the ground-truth derivatives folder under ``OUT/derivatives``.
GROUNDTRUTH = "groundtruth"
_BIDS_VERSION = "1.10.0"
_CODE_URL = "https://github.com/mednet-pvs/mednet-pvs"

_PARTICIPANT_COLUMNS = {
    "participant_id": "Participant label.",
    "age": {"Description": "Simulated age.", "Units": "year"},
    "sex": {"Description": "Simulated sex.", "Levels": {"F": "female", "M": "male"}},
    "anatomy": "Bundled anatomy the phantom was warped from (mednet_pvs/data/anatomy).",
    "pvs_grade_bg": "Basal-ganglia PVS burden grade (0 none to 4 severe; Potter-like scale).",
    "pvs_grade_wm": "White-matter (centrum semiovale) PVS burden grade (0 none to 4 severe).",
    "n_pvs": "Number of PVS drawn.",
    "n_pvs_in_mask": "Number of drawn PVS with at least one ground-truth mask voxel.",
    "pvs_volume_mm3": {"Description": "Volume of the ground-truth PVS mask.", "Units": "mm^3"},
    "wmh_fazekas": "Fazekas-like white matter hyperintensity grade (0-3) used for the simulation.",
    "n_lacunes": "Number of lacunes drawn.",
    "n_vessels": "Number of flow-void vessels drawn.",
    "voxel_size_mm": "Voxel size of the images and the ground truth (x by y by z, mm).",
    "seed": "Generator seed of this subject: mednet_pvs.synth.generate_subject(seed, ...) regenerates it.",
}
_PVS_TABLE_COLUMNS = {
    "pvs_id": "PVS identifier; its voxels carry this value in the desc-pvsinstances dseg image.",
    "location": "Location class the PVS was drawn in (white_matter, basal_ganglia, hippocampus, midbrain).",
    "region": "PVS region (seg-pvsregions) at the centre of the PVS.",
    "length_mm": {"Description": "Arc length of the centreline; the tube extends one radius beyond each end.",
                  "Units": "mm"},
    "diameter_mm": {"Description": "Tube diameter.", "Units": "mm"},
    "volume_mm3": {"Description": "Analytic tube volume.", "Units": "mm^3"},
    "centre_x_mm": {"Description": "Centre (half arc length) x, scanner RAS.", "Units": "mm"},
    "centre_y_mm": {"Description": "Centre y, scanner RAS.", "Units": "mm"},
    "centre_z_mm": {"Description": "Centre z, scanner RAS.", "Units": "mm"},
    "mask_voxels": "Number of ground-truth mask voxels assigned to this PVS (0: too thin for the threshold).",
}  # fmt: skip
_DISTRACTOR_TABLE_COLUMNS = {
    "distractor_id": "Distractor identifier (row number).",
    "type": "lacune, vessel (flow void) or wmh (one connected WMH component).",
    "region": "PVS region (seg-pvsregions) at the distractor centre.",
    "size_mm": {"Description": "Largest diameter (lacune), length (vessel) or equivalent diameter (wmh).",
                "Units": "mm"},
    "volume_mm3": {"Description": "Volume (analytic for lacunes and vessels, voxel count for WMH).",
                   "Units": "mm^3"},
    "centre_x_mm": {"Description": "Centre x, scanner RAS.", "Units": "mm"},
    "centre_y_mm": {"Description": "Centre y, scanner RAS.", "Units": "mm"},
    "centre_z_mm": {"Description": "Centre z, scanner RAS.", "Units": "mm"},
}  # fmt: skip
_ASEG_NAMES = {
    2: "Left-Cerebral-White-Matter", 3: "Left-Cerebral-Cortex", 4: "Left-Lateral-Ventricle",
    5: "Left-Inf-Lat-Vent", 7: "Left-Cerebellum-White-Matter", 8: "Left-Cerebellum-Cortex",
    10: "Left-Thalamus", 11: "Left-Caudate", 12: "Left-Putamen", 13: "Left-Pallidum", 14: "3rd-Ventricle",
    15: "4th-Ventricle", 16: "Brain-Stem", 17: "Left-Hippocampus", 18: "Left-Amygdala", 24: "CSF",
    26: "Left-Accumbens-area", 28: "Left-VentralDC", 30: "Left-vessel", 31: "Left-choroid-plexus",
    41: "Right-Cerebral-White-Matter", 42: "Right-Cerebral-Cortex", 43: "Right-Lateral-Ventricle",
    44: "Right-Inf-Lat-Vent", 46: "Right-Cerebellum-White-Matter", 47: "Right-Cerebellum-Cortex",
    49: "Right-Thalamus", 50: "Right-Caudate", 51: "Right-Putamen", 52: "Right-Pallidum",
    53: "Right-Hippocampus", 54: "Right-Amygdala", 58: "Right-Accumbens-area", 60: "Right-VentralDC",
    62: "Right-vessel", 63: "Right-choroid-plexus", 72: "5th-Ventricle", 77: "WM-hypointensities",
    85: "Optic-Chiasm", 251: "CC_Posterior", 252: "CC_Mid_Posterior", 253: "CC_Central",
    254: "CC_Mid_Anterior", 255: "CC_Anterior",
}  # fmt: skip


def subject_label(index: int, width: int = 2) -> str:
    """Zero-padded participant label of subject ``index`` (1-based)."""
    return f"{index:0{width}d}"


def _raw_image(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Acquired intensities as int16, the usual scanner data type."""
    data = np.clip(np.rint(np.asarray(img.dataobj)), 0, np.iinfo(np.int16).max).astype(np.int16)
    out = nib.Nifti1Image(data, img.affine, img.header)
    out.set_data_dtype(np.int16)
    return out


def write_subject(phantom: Phantom, out_dir: str | Path, label: str) -> list[Path]:
    """Write one phantom's images and ground truth into the dataset ``out_dir``; returns the files."""
    out_dir = Path(out_dir)
    sub = f"sub-{label}"
    anat = out_dir / sub / "anat"
    truth = out_dir / "derivatives" / GROUNDTRUTH / sub / "anat"
    written = []
    for contrast, img in phantom.images.items():
        written.append(save_nifti(_raw_image(img), anat / f"{sub}_{contrast}.nii.gz"))
        written.append(write_json(anat / f"{sub}_{contrast}.json", phantom.sidecars[contrast]))
    outputs = {
        "desc-pvs_mask": (
            phantom.pvs_mask,
            "PVS ground truth: voxels whose PVS partial-volume fraction is at least "
            "GroundTruthFractionThreshold, plus the voxels crossed by the centreline of every PVS whose "
            "centreline voxels are on average at least GroundTruthCentrelineThreshold inside PVS.",
        ),
        "label-PVS_probseg": (
            phantom.pvs_fraction,
            "PVS partial-volume fraction of every voxel (fraction of a regular sub-voxel lattice inside "
            "a PVS).",
        ),
        "desc-pvsinstances_dseg": (
            phantom.pvs_instances,
            "PVS id (desc-pvs_morph.tsv pvs_id) of every ground-truth mask voxel; 0 elsewhere.",
        ),
        "seg-pvsregions_dseg": (
            phantom.regions,
            "PVS regions of the phantom anatomy (mednet_pvs.regions.lut), from its FreeSurfer-style labels.",
        ),
        "desc-aseg_dseg": (phantom.aseg, "FreeSurfer-style anatomical labels of the phantom (aseg ids)."),
        "desc-distractors_dseg": (
            phantom.distractors,
            "Distractors a PVS model must not segment (desc-distractors_dseg.tsv); PVS voxels are 0.",
        ),
    }
    for key, (img, description) in outputs.items():
        written.append(save_nifti(img, truth / f"{sub}_{key}.nii.gz"))
        sidecar: dict[str, object] = {"Description": description}
        if key == "desc-pvs_mask":
            sidecar["Type"] = "ROI"
        if key in ("desc-pvs_mask", "label-PVS_probseg", "desc-pvsinstances_dseg"):
            sidecar["GroundTruthFractionThreshold"] = phantom.config.gt_fraction_threshold
            sidecar["GroundTruthCentrelineThreshold"] = phantom.config.gt_centreline_threshold
        written.append(write_json(truth / f"{sub}_{key}.json", sidecar))
    written.append(write_tsv(truth / f"{sub}_desc-pvs_morph.tsv", phantom.pvs_table))
    written.append(write_tsv(truth / f"{sub}_desc-distractors_morph.tsv", phantom.distractor_table))
    return written


def _column_sidecar(columns: dict[str, object]) -> dict[str, object]:
    return {
        name: value if isinstance(value, dict) else {"Description": value} for name, value in columns.items()
    }


def _dataset_files(out_dir: Path, config: SynthConfig, contrasts: Sequence[str], base_seed: int) -> None:
    generated_by = [{"Name": "mednet-pvs-synth", "Version": __version__, "CodeURL": _CODE_URL}]
    write_json(
        out_dir / "dataset_description.json",
        {
            "Name": "mednet-pvs synthetic PVS phantoms",
            "BIDSVersion": _BIDS_VERSION,
            "DatasetType": "raw",
            "License": "CC0",
            "Authors": ["mednet-pvs-synth"],
            "GeneratedBy": generated_by,
            "GeneratorSettings": {"base_seed": base_seed, "contrasts": list(contrasts), **config.to_dict()},
        },
    )
    write_text(
        out_dir / "README",
        "Synthetic skull-stripped brain MRI phantoms with perivascular spaces (PVS), made by "
        "mednet-pvs-synth.\n\nThe exact PVS ground truth, regions and distractors are in "
        "derivatives/groundtruth.\nEvery subject can be regenerated from the seed in participants.tsv; "
        "see docs/synthetic.md of mednet-pvs.\n",
    )
    write_json(out_dir / "participants.json", _column_sidecar(_PARTICIPANT_COLUMNS))

    truth = out_dir / "derivatives" / GROUNDTRUTH
    write_json(
        truth / "dataset_description.json",
        {
            "Name": "mednet-pvs synthetic PVS phantoms: ground truth",
            "BIDSVersion": _BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": generated_by,
            "SourceDatasets": [{"URL": "../../"}],
        },
    )
    write_text(
        truth / "README",
        "Exact ground truth of the phantoms in ../../ : PVS masks (partial-volume fraction >= threshold), "
        "partial-volume fractions, PVS instances, PVS regions, FreeSurfer-style labels, distractors, and "
        "tables of every drawn PVS and distractor.\n",
    )
    write_text(truth / ".bidsignore", "*_morph.tsv\n*_morph.json\n")
    write_lookup_table(truth)
    write_tsv(
        truth / "desc-distractors_dseg.tsv",
        pd.DataFrame({"index": list(DISTRACTOR_LABELS), "name": list(DISTRACTOR_LABELS.values())}),
    )
    write_tsv(
        truth / "desc-aseg_dseg.tsv",
        pd.DataFrame({"index": list(_ASEG_NAMES), "name": list(_ASEG_NAMES.values())}),
    )
    write_json(truth / "desc-pvs_morph.json", _column_sidecar(_PVS_TABLE_COLUMNS))
    write_json(truth / "desc-distractors_morph.json", _column_sidecar(_DISTRACTOR_TABLE_COLUMNS))


def _update_participants(out_dir: Path, rows: list[dict[str, object]]) -> pd.DataFrame:
    """Merge ``rows`` into participants.tsv (rows of regenerated subjects are replaced)."""
    path = out_dir / "participants.tsv"
    new = pd.DataFrame(rows)
    if path.exists():
        old = pd.read_csv(path, sep="\t", dtype={"participant_id": str}, keep_default_na=False)
        new = pd.concat([old[~old.participant_id.isin(new.participant_id)], new], ignore_index=True)
    new = new.sort_values("participant_id", kind="stable").reset_index(drop=True)
    write_tsv(path, new[[c for c in _PARTICIPANT_COLUMNS if c in new.columns]])
    return new


def write_dataset(
    out_dir: str | Path,
    n_subjects: int,
    contrasts: Sequence[str] = ("T2w", "T1w", "FLAIR"),
    base_seed: int = 0,
    config: SynthConfig | None = None,
    first_index: int = 1,
) -> pd.DataFrame:
    """Generate subjects ``first_index`` .. ``first_index + n_subjects - 1`` into the dataset ``out_dir``.

    Subject ``i`` always gets the seed :func:`subject_seed` (``base_seed``, ``i``), so any subject can
    be regenerated alone. Returns the participants table.
    """
    config = config or SynthConfig()
    out_dir = Path(out_dir)
    _dataset_files(out_dir, config, contrasts, base_seed)
    width = max(2, len(str(first_index + n_subjects - 1)))
    rows = []
    for index in tqdm(range(first_index, first_index + n_subjects), desc="phantoms", unit="subject"):
        seed = subject_seed(base_seed, index)
        label = subject_label(index, width)
        phantom = generate_subject(seed, contrasts, config)
        write_subject(phantom, out_dir, label)
        rows.append({"participant_id": f"sub-{label}", **phantom.participant})
        LOGGER.info("sub-%s: %d PVS, seed %d", label, phantom.participant["n_pvs"], seed)
    return _update_participants(out_dir, rows)

"""Derivative sinks: every output of one source image, with its BIDS name and sidecar."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mednet_pvs.bids import derivative_path
from mednet_pvs.config import Config
from mednet_pvs.interfaces.bids import DerivativesDataSink
from mednet_pvs.regions.lut import REGION_SET

__all__ = ["OUTPUTS", "init_ds_pvs_wf"]

#: (input field, suffix, extension, entities, derived-from fields, static sidecar content)
OUTPUTS: tuple[tuple[str, str, str, dict[str, str], tuple[str, ...], dict], ...] = (
    (
        "brain_mask",
        "mask",
        ".nii.gz",
        {"desc": "brain"},
        (),
        {
            "Type": "Brain",
            "Description": "Brain mask used for PVS segmentation (native grid).",
        },
    ),
    (
        "probseg",
        "probseg",
        ".nii.gz",
        {"label": "PVS"},
        (),
        {
            "Description": "PVS probability (model softmax, or Frangi vesselness for --method frangi) on the "
            "input's native grid.",
        },
    ),
    (
        "mask",
        "mask",
        ".nii.gz",
        {"desc": "pvs"},
        ("probseg",),
        {
            "Type": "ROI",
            "Description": "PVS mask: probability above the threshold, inside the brain, clusters "
            "(26-connected) at least the minimum size.",
        },
    ),
    (
        "clusters",
        "dseg",
        ".nii.gz",
        {"desc": "pvsclusters"},
        ("mask",),
        {
            "Description": "Labelled PVS clusters (26-connectivity); voxel value = cluster_id of the "
            "census table.",
        },
    ),
    (
        "regions",
        "dseg",
        ".nii.gz",
        {"seg": REGION_SET},
        (),
        {
            "Description": "PVS regions on the input's native grid; labels in the top-level "
            f"seg-{REGION_SET}_dseg.tsv.",
        },
    ),
    ("region_stats", "morph", ".tsv", {"desc": "pvs"}, ("mask", "regions"), {}),
    ("census", "morph", ".tsv", {"desc": "pvsclusters"}, ("clusters", "probseg", "regions"), {}),
)
_DYNAMIC_META = {
    "brain_mask": "brain_mask_meta",
    "probseg": "model_meta",
    "mask": "model_meta",
    "region_stats": "region_stats_meta",
    "census": "census_meta",
    "regions": "regions_meta",
}


def init_ds_pvs_wf(
    config: Config, source_file: Path, with_regions: bool, name: str = "ds_pvs_wf"
) -> pe.Workflow:
    """Store the outputs of ``source_file`` in ``config.output_dir``.

    Inputs: one field per output (see :data:`OUTPUTS`) plus the run-time sidecar dictionaries
    ``brain_mask_meta``, ``model_meta``, ``region_stats_meta``, ``census_meta`` and ``regions_meta``.
    Output: ``out_files``.
    """
    workflow = pe.Workflow(name=name)
    fields = [o[0] for o in OUTPUTS] + sorted(set(_DYNAMIC_META.values()))
    inputnode = pe.Node(niu.IdentityInterface(fields=fields), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_files"]), name="outputnode")
    outputs = [o for o in OUTPUTS if with_regions or o[0] != "regions"]
    relative = {
        field: str(derivative_path(".", source_file, suffix, ext, **entities))
        for field, suffix, ext, entities, _, _ in outputs
    }
    merge = pe.Node(niu.Merge(len(outputs)), name="merge_outputs", run_without_submitting=True)
    for i, (field, suffix, extension, entities, derived, meta) in enumerate(outputs, start=1):
        sink = pe.Node(
            DerivativesDataSink(
                base_directory=str(config.output_dir),
                bids_dir=str(config.bids_dir),
                source_file=str(source_file),
                suffix=suffix,
                extension=extension,
                derived_from=[relative[d] for d in derived if d in relative],
                **entities,
            ),
            name=f"ds_{field}",
            run_without_submitting=True,
        )
        sink.inputs.meta = meta
        workflow.connect(inputnode, field, sink, "in_file")
        if field in _DYNAMIC_META:
            workflow.connect(inputnode, _DYNAMIC_META[field], sink, "extra_meta")
        workflow.connect(sink, "out_file", merge, f"in{i}")
    workflow.connect(merge, "out", outputnode, "out_files")
    return workflow

"""Top-level workflows: one per run, one per participant, one per source image."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mednet_pvs.bids import ImageRecord
from mednet_pvs.config import Config
from mednet_pvs.inference.footprint import image_grid
from mednet_pvs.interfaces.reports import SubjectReport
from mednet_pvs.workflows.outputs import init_ds_pvs_wf
from mednet_pvs.workflows.preproc import init_anat_preproc_wf
from mednet_pvs.workflows.regions import init_regions_wf
from mednet_pvs.workflows.segmentation import init_segmentation_wf
from mednet_pvs.workflows.stats import init_pvs_stats_wf

__all__ = ["init_mednet_pvs_wf", "init_pvs_wf", "init_single_subject_wf", "subject_log_dir"]


def subject_log_dir(config: Config, subject: str) -> Path:
    """``output_dir/sub-<label>/log/<run-id>``: crash files and the run's configuration."""
    return config.output_dir / f"sub-{subject}" / "log" / config.run_id


def init_mednet_pvs_wf(
    config: Config, images: dict[str, list[ImageRecord]], model_dir: Path | None, use_gpu: bool
) -> pe.Workflow:
    """One sub-workflow per participant; each keeps its crash files in its own log folder."""
    workflow = pe.Workflow(name="mednet_pvs_wf", base_dir=str(config.work_dir))
    for subject, records in images.items():
        single = init_single_subject_wf(config, subject, records, model_dir, use_gpu)
        single.config["execution"]["crashdump_dir"] = str(subject_log_dir(config, subject))
        for node in single._get_all_nodes():  # nodes keep their own copy of the configuration
            node.config = deepcopy(single.config)
        workflow.add_nodes([single])
    return workflow


def init_single_subject_wf(
    config: Config, subject: str, images: list[ImageRecord], model_dir: Path | None, use_gpu: bool
) -> pe.Workflow:
    """Every image of one participant, then the participant's report."""
    workflow = pe.Workflow(name=f"sub_{subject}_wf")
    collect = pe.Node(niu.Merge(len(images)), name="collect_outputs", run_without_submitting=True)
    report = pe.Node(
        SubjectReport(output_dir=str(config.output_dir), subject=subject, run_id=config.run_id),
        name="report",
        mem_gb=1.0,
    )
    for i, image in enumerate(images, start=1):
        pvs_wf = init_pvs_wf(config, image, model_dir, use_gpu, name=f"{image.key}_wf")
        workflow.connect(pvs_wf, "outputnode.out_files", collect, f"in{i}")
    workflow.connect(collect, "out", report, "depends_on")
    return workflow


def init_pvs_wf(
    config: Config, image: ImageRecord, model_dir: Path | None, use_gpu: bool, name: str = "pvs_wf"
) -> pe.Workflow:
    """One source image: preprocessing, regions, segmentation, statistics, outputs."""
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["source_file"]), name="inputnode")
    inputnode.inputs.source_file = str(image.path)
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_files"]), name="outputnode")

    preproc_wf = init_anat_preproc_wf(config, image.contrast)
    regions_wf = init_regions_wf(config, image)
    seg_wf = init_segmentation_wf(config, image.contrast, model_dir, use_gpu, image_grid(image.path))
    stats_wf = init_pvs_stats_wf(config, with_regions=regions_wf is not None)
    ds_wf = init_ds_pvs_wf(config, image.path, with_regions=regions_wf is not None)

    workflow.connect([
        (inputnode, preproc_wf, [("source_file", "inputnode.in_file")]),
        (preproc_wf, seg_wf, [("outputnode.brain", "inputnode.brain"),
                              ("outputnode.brain_mask", "inputnode.brain_mask")]),
        (inputnode, stats_wf, [("source_file", "inputnode.source_file")]),
        (preproc_wf, stats_wf, [("outputnode.brain_mask", "inputnode.brain_mask")]),
        (preproc_wf, ds_wf, [("outputnode.skullstrip_info", "inputnode.brain_mask_meta")]),
        (seg_wf, stats_wf, [("outputnode.probseg", "inputnode.probseg"),
                            ("outputnode.model_info", "inputnode.model_info")]),
        (stats_wf, ds_wf, [("outputnode.brain_mask", "inputnode.brain_mask"),
                           ("outputnode.probseg", "inputnode.probseg"),
                           ("outputnode.mask", "inputnode.mask"),
                           ("outputnode.clusters", "inputnode.clusters"),
                           ("outputnode.region_stats", "inputnode.region_stats"),
                           ("outputnode.census", "inputnode.census"),
                           ("outputnode.region_stats_meta", "inputnode.region_stats_meta"),
                           ("outputnode.census_meta", "inputnode.census_meta"),
                           ("outputnode.mask_meta", "inputnode.model_meta")]),
        (ds_wf, outputnode, [("outputnode.out_files", "out_files")]),
    ])  # fmt: skip
    if regions_wf is not None:
        workflow.connect([
            (preproc_wf, regions_wf, [("outputnode.brain", "inputnode.brain"),
                                      ("outputnode.brain_mask", "inputnode.brain_mask")]),
            (regions_wf, seg_wf, [("outputnode.regions", "inputnode.regions")]),
            (regions_wf, stats_wf, [("outputnode.regions", "inputnode.regions"),
                                    ("outputnode.landmarks", "inputnode.landmarks")]),
            (regions_wf, ds_wf, [("outputnode.qc", "inputnode.regions_meta")]),
            (stats_wf, ds_wf, [("outputnode.regions", "inputnode.regions")]),
        ])  # fmt: skip
    return workflow

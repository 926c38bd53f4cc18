"""From probability to PVS mask and statistics, on the input's native grid."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mednet_pvs.config import Config
from mednet_pvs.interfaces.images import ToNativeGrid
from mednet_pvs.interfaces.stats import PVSMask, PVSStatistics

__all__ = ["init_pvs_stats_wf"]


def init_pvs_stats_wf(config: Config, with_regions: bool, name: str = "pvs_stats_wf") -> pe.Workflow:
    """Map results to the native grid, threshold, label clusters and tabulate them.

    Inputs: ``source_file``, ``probseg``, ``brain_mask``, ``regions`` (conformed grid), ``model_info``,
    ``landmarks``. Outputs (native grid): ``probseg``, ``brain_mask``, ``regions``, ``mask``,
    ``clusters``, ``region_stats``, ``census``, the tables' sidecar metadata and ``mask_meta``
    (threshold, minimum cluster size, method).
    """
    workflow = pe.Workflow(name=name)
    fields = ["source_file", "probseg", "brain_mask", "regions", "model_info", "landmarks"]
    inputnode = pe.Node(niu.IdentityInterface(fields=fields), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=[
                "probseg",
                "brain_mask",
                "regions",
                "mask",
                "clusters",
                "region_stats",
                "census",
                "region_stats_meta",
                "census_meta",
                "mask_meta",
            ]
        ),
        name="outputnode",
    )
    native_prob = pe.Node(ToNativeGrid(dtype="float32"), name="native_probseg")
    native_brain = pe.Node(ToNativeGrid(dtype="uint8"), name="native_brain_mask")
    threshold = pe.Node(
        PVSMask(threshold=config.threshold or 0.0, min_cluster_mm3=config.min_cluster_size), name="pvs_mask"
    )
    stats = pe.Node(PVSStatistics(), name="statistics", mem_gb=2.0)
    workflow.connect([
        (inputnode, native_prob, [("probseg", "in_file"), ("source_file", "reference")]),
        (inputnode, native_brain, [("brain_mask", "in_file"), ("source_file", "reference")]),
        (inputnode, threshold, [("model_info", "model_info")]),
        (native_prob, threshold, [("out_file", "probseg")]),
        (native_brain, threshold, [("out_file", "brain_mask")]),
        (inputnode, stats, [("landmarks", "landmarks")]),
        (threshold, stats, [("out_file", "mask")]),
        (native_prob, stats, [("out_file", "probseg")]),
        (native_brain, stats, [("out_file", "brain_mask")]),
        (native_prob, outputnode, [("out_file", "probseg")]),
        (native_brain, outputnode, [("out_file", "brain_mask")]),
        (threshold, outputnode, [("out_file", "mask")]),
        (stats, outputnode, [("clusters", "clusters"), ("region_stats", "region_stats"), ("census", "census"),
                             ("region_stats_meta", "region_stats_meta"), ("census_meta", "census_meta")]),
        (threshold, outputnode, [("meta", "mask_meta")]),
    ])  # fmt: skip
    if with_regions:
        native_regions = pe.Node(ToNativeGrid(dtype="uint8"), name="native_regions")
        workflow.connect([
            (inputnode, native_regions, [("regions", "in_file"), ("source_file", "reference")]),
            (native_regions, stats, [("out_file", "regions")]),
            (native_regions, outputnode, [("out_file", "regions")]),
        ])  # fmt: skip
    return workflow

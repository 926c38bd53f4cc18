"""PVS segmentation: a model through the inference engine, or the Frangi baseline."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mednet_pvs.config import Config
from mednet_pvs.inference.footprint import ImageGrid, segmentation_memory_gb
from mednet_pvs.interfaces.segmentation import FrangiSegmentation, ModelSegmentation
from mednet_pvs.models.card import ModelCard

__all__ = ["init_segmentation_wf"]


def init_segmentation_wf(
    config: Config,
    contrast: str,
    model_dir: Path | None,
    use_gpu: bool,
    grid: ImageGrid | None = None,
    name: str = "segmentation_wf",
) -> pe.Workflow:
    """PVS probability on the conformed grid.

    Inputs: ``brain`` (zero outside the brain), ``brain_mask``, ``regions`` (used by Frangi to
    stay inside rated regions). Outputs: ``probseg``, ``model_info``. ``grid`` (the image's shape
    and voxel size) sizes the model step's memory estimate; without it a 1 mm head is assumed.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["brain", "brain_mask", "regions"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["probseg", "model_info"]), name="outputnode")
    if config.method == "frangi":
        segment = pe.Node(FrangiSegmentation(contrast=contrast), name="frangi", mem_gb=3.0)
        workflow.connect([
            (inputnode, segment, [("brain", "in_file"), ("brain_mask", "brain_mask"),
                                  ("regions", "regions")]),
        ])  # fmt: skip
    else:
        card = ModelCard.load(model_dir)
        segment = pe.Node(
            ModelSegmentation(
                model_dir=str(model_dir),
                contrast=contrast,
                device=config.device,
                tta=config.tta,
                tta_mirroring=config.tta_mirroring,
                folds=config.folds,
                threads=config.omp_nthreads,
                use_gpu=use_gpu,
            ),
            name="mednext",
            n_procs=1 if use_gpu else config.omp_nthreads,
            mem_gb=segmentation_memory_gb(card.architecture, card.patch_size, card.spacing, use_gpu, grid),
        )
        workflow.connect(inputnode, "brain", segment, "in_file")
    workflow.connect([(segment, outputnode, [("out_file", "probseg"), ("model_info", "model_info")])])
    return workflow

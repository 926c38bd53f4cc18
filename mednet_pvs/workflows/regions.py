"""PVS regions on the subject's grid: bundled atlas registration or the subject's own labels."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mednet_pvs.bids import ImageRecord
from mednet_pvs.config import Config
from mednet_pvs.interfaces.regions import AtlasRegions, LabelFileRegions

__all__ = ["init_regions_wf"]


def init_regions_wf(config: Config, image: ImageRecord, name: str = "regions_wf") -> pe.Workflow | None:
    """Region labels (conformed grid); None when ``--regions none``.

    Inputs: ``brain``, ``brain_mask``. Outputs: ``regions``, ``qc`` (dict), ``landmarks`` (dict).
    """
    if config.regions == "none":
        return None
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["brain", "brain_mask"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["regions", "qc", "landmarks"]), name="outputnode")
    if config.regions == "atlas":
        node = pe.Node(
            AtlasRegions(
                contrast=image.contrast,
                threads=config.omp_nthreads,
                cache_dir=str(config.work_dir / "atlas_transforms"),
            ),
            name="atlas_registration",
            n_procs=config.omp_nthreads,
            mem_gb=3.0,
        )
        workflow.connect([(inputnode, node, [("brain", "in_file"), ("brain_mask", "brain_mask")])])
    else:
        node = pe.Node(
            LabelFileRegions(
                source=config.regions,
                subject=image.subject,
                session=image.session or "",
                fs_subjects_dir=str(config.fs_subjects_dir or ""),
            ),
            name="label_regions",
            mem_gb=2.0,
        )
        workflow.connect([(inputnode, node, [("brain", "reference"), ("brain_mask", "brain_mask")])])
    workflow.connect(
        [(node, outputnode, [("out_file", "regions"), ("qc", "qc"), ("landmarks", "landmarks")])]
    )
    return workflow

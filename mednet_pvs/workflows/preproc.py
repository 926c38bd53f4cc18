"""Anatomical preprocessing: conform, optional N4, optional skull strip."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mednet_pvs.config import Config
from mednet_pvs.interfaces.images import Conform
from mednet_pvs.interfaces.preproc import N4BiasCorrection, SkullStrip

__all__ = ["init_anat_preproc_wf"]


def init_anat_preproc_wf(config: Config, contrast: str, name: str = "anat_preproc_wf") -> pe.Workflow:
    """Conform the image, correct the bias field, extract the brain.

    Inputs: ``in_file`` (raw image). Outputs: ``conformed`` (RAS+ float32), ``brain`` (bias-corrected,
    zero outside the brain), ``brain_mask`` and ``skullstrip_info`` (method used, brain volume).
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["in_file"]), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["conformed", "brain", "brain_mask", "skullstrip_info"]),
        name="outputnode",
    )
    conform = pe.Node(Conform(), name="conform", mem_gb=1.0)
    skullstrip = pe.Node(
        SkullStrip(
            contrast=contrast,
            method="nonzero" if config.skip_skull_strip else "auto",
            threads=config.omp_nthreads,
        ),
        name="skullstrip",
        n_procs=config.omp_nthreads,
        mem_gb=3.0,
    )
    workflow.connect([
        (inputnode, conform, [("in_file", "in_file")]),
        (inputnode, skullstrip, [("in_file", "source_name")]),
        (conform, outputnode, [("out_file", "conformed")]),
        (skullstrip, outputnode, [("out_mask", "brain_mask"), ("out_file", "brain"),
                                  ("info", "skullstrip_info")]),
    ])  # fmt: skip
    if config.skip_n4:
        workflow.connect(conform, "out_file", skullstrip, "in_file")
        return workflow
    n4 = pe.Node(
        N4BiasCorrection(threads=config.omp_nthreads), name="n4", n_procs=config.omp_nthreads, mem_gb=2.0
    )
    workflow.connect([
        (conform, n4, [("out_file", "in_file")]),
        (inputnode, n4, [("in_file", "source_name")]),
        (n4, skullstrip, [("out_file", "in_file")]),
    ])  # fmt: skip
    return workflow

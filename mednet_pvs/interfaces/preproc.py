"""Interfaces for N4 bias correction and skull stripping."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from mednet_pvs.interfaces.images import node_file

__all__ = ["N4BiasCorrection", "SkullStrip", "set_threads"]


def set_threads(threads: int) -> None:
    """Thread count for ITK/ANTs and OpenMP in this worker process (0 leaves the defaults)."""
    if threads > 0:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


class _N4InputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="conformed image")
    source_name = traits.Str(desc="the raw file's name, for error messages")
    threads = traits.Int(0, usedefault=True, desc="ITK threads (0: default)")


class _N4OutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="bias-corrected image (float32, same grid)")


class N4BiasCorrection(SimpleInterface):
    """N4 bias-field correction (antspyx)."""

    input_spec = _N4InputSpec
    output_spec = _N4OutputSpec

    def _run_interface(self, runtime):
        from mednet_pvs.preproc.n4 import n4_bias_correct

        set_threads(self.inputs.threads)
        corrected = n4_bias_correct(nib.load(self.inputs.in_file), source=self.inputs.source_name or None)
        self._results["out_file"] = node_file(runtime, "n4.nii")
        corrected.to_filename(self._results["out_file"])
        return runtime


class _SkullStripInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="conformed (bias-corrected) image")
    contrast = traits.Str(mandatory=True, desc="T1w, T2w or FLAIR")
    method = traits.Str("auto", usedefault=True, desc="auto, deepbet or nonzero")
    source_name = traits.Str(desc="the raw file's name, for error messages")
    threads = traits.Int(0, usedefault=True, desc="CPU threads (0: default)")


class _SkullStripOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the image with zeros outside the brain")
    out_mask = File(exists=True, desc="brain mask (uint8)")
    info = traits.Dict(desc="method used and brain volume")


class SkullStrip(SimpleInterface):
    """Brain mask and brain-extracted image."""

    input_spec = _SkullStripInputSpec
    output_spec = _SkullStripOutputSpec

    def _run_interface(self, runtime):
        from mednet_pvs.preproc.skullstrip import extract_brain

        set_threads(self.inputs.threads)
        img = nib.load(self.inputs.in_file)
        extraction = extract_brain(
            img,
            self.inputs.contrast,
            method=self.inputs.method,
            threads=self.inputs.threads or None,
            source=self.inputs.source_name or None,
        )
        mask = np.asarray(extraction.mask.dataobj) > 0
        brain = np.where(mask, np.asarray(img.dataobj, dtype=np.float32), np.float32(0))
        self._results["out_mask"] = node_file(runtime, "brain_mask.nii.gz")
        extraction.mask.to_filename(self._results["out_mask"])
        self._results["out_file"] = node_file(runtime, "brain.nii")
        nib.Nifti1Image(brain, img.affine, img.header).to_filename(self._results["out_file"])
        self._results["info"] = {"SkullStrip": extraction.summary()}
        return runtime

"""Interfaces that load, conform and map images back to the native grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from mednet_pvs.preproc.conform import conform, load_anatomical, native_image, to_native

__all__ = ["Conform", "ToNativeGrid", "node_file"]


def node_file(runtime: object, name: str) -> str:
    """Path of an output file inside the node's working folder."""
    return str(Path(runtime.cwd) / name)  # type: ignore[attr-defined]


class _ConformInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="anatomical image (NIfTI)")


class _ConformOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="closest-RAS+ float32 image (no resampling)")


class Conform(SimpleInterface):
    """Validate an anatomical image and reorient it to RAS+ float32."""

    input_spec = _ConformInputSpec
    output_spec = _ConformOutputSpec

    def _run_interface(self, runtime):
        img = conform(load_anatomical(self.inputs.in_file))
        self._results["out_file"] = node_file(runtime, "conformed.nii")
        img.to_filename(self._results["out_file"])
        return runtime


class _ToNativeInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image on the conformed grid")
    reference = File(exists=True, mandatory=True, desc="the source image whose grid is restored")
    dtype = traits.Enum("float32", "uint8", "uint16", "int32", usedefault=True, desc="output voxel type")


class _ToNativeOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="image on the source's exact grid (shape, affine)")


class ToNativeGrid(SimpleInterface):
    """Undo the conforming reorientation exactly (axis permutation/flips, no interpolation)."""

    input_spec = _ToNativeInputSpec
    output_spec = _ToNativeOutputSpec

    def _run_interface(self, runtime):
        reference = nib.load(self.inputs.reference)
        data = np.asanyarray(nib.load(self.inputs.in_file).dataobj)
        out = native_image(to_native(data, reference.affine), reference, np.dtype(self.inputs.dtype))
        self._results["out_file"] = node_file(runtime, "native.nii.gz")
        out.to_filename(self._results["out_file"])
        return runtime

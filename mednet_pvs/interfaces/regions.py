"""Interfaces producing PVS region labels on the subject's (conformed) grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from mednet_pvs.interfaces.images import node_file
from mednet_pvs.interfaces.preproc import set_threads

__all__ = ["AtlasRegions", "LabelFileRegions"]


class _RegionsOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="PVS region labels (uint8) on the input grid")
    qc = traits.Dict(desc="how the regions were obtained and their quality figures")
    landmarks = traits.Dict(desc="landmarks in scanner mm (anterior commissure, ...)")


class _AtlasInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="brain-extracted, bias-corrected conformed image")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the same grid")
    contrast = traits.Str(mandatory=True, desc="T1w or T2w")
    cache_dir = traits.Str(desc="folder caching transforms across runs (default: the node folder)")
    threads = traits.Int(0, usedefault=True, desc="ITK threads (0: default)")


class AtlasRegions(SimpleInterface):
    """Register the bundled MNI region atlas to the subject (antspyx affine + SyN)."""

    input_spec = _AtlasInputSpec
    output_spec = _RegionsOutputSpec

    def _run_interface(self, runtime):
        from mednet_pvs.regions.registration import register_atlas

        set_threads(self.inputs.threads)
        result = register_atlas(
            nib.load(self.inputs.in_file),
            nib.load(self.inputs.brain_mask),
            self.inputs.contrast,
            Path(self.inputs.cache_dir or runtime.cwd),
            threads=self.inputs.threads or None,
        )
        self._results["out_file"] = node_file(runtime, "regions.nii.gz")
        result.regions.to_filename(self._results["out_file"])
        self._results["qc"] = {
            "RegionSource": "bundled MNI atlas registered with antspyx",
            "RegistrationQC": result.qc,
        }
        self._results["landmarks"] = {k: [float(v) for v in xyz] for k, xyz in result.landmarks.items()}
        return runtime


class _LabelFileInputSpec(BaseInterfaceInputSpec):
    reference = File(exists=True, mandatory=True, desc="image whose grid the regions take")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the reference grid")
    source = traits.Str(mandatory=True, desc="'aseg', a label file, or a folder holding label files")
    fs_subjects_dir = traits.Str(desc="FreeSurfer SUBJECTS_DIR (for source 'aseg')")
    subject = traits.Str(mandatory=True, desc="participant label")
    session = traits.Str(desc="session label")


class LabelFileRegions(SimpleInterface):
    """Map the participant's FreeSurfer/SynthSeg labels to PVS regions on the reference grid."""

    input_spec = _LabelFileInputSpec
    output_spec = _RegionsOutputSpec

    def _run_interface(self, runtime):
        from mednet_pvs.regions.freesurfer import find_label_file, regions_from_labels_file

        source = self.inputs.fs_subjects_dir if self.inputs.source == "aseg" else self.inputs.source
        path = find_label_file(source, self.inputs.subject, self.inputs.session or None)
        regions = regions_from_labels_file(
            path, nib.load(self.inputs.reference), nib.load(self.inputs.brain_mask)
        )
        self._results["out_file"] = node_file(runtime, "regions.nii.gz")
        regions.to_filename(self._results["out_file"])
        self._results["qc"] = {"RegionSource": f"FreeSurfer/SynthSeg labels: {path}"}
        self._results["landmarks"] = {}
        return runtime

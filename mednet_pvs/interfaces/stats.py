"""Interfaces for the PVS mask and its statistics (native grid)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from mednet_pvs.interfaces.images import node_file
from mednet_pvs.preproc.conform import native_image

__all__ = ["PVSMask", "PVSStatistics"]


class _MaskInputSpec(BaseInterfaceInputSpec):
    probseg = File(exists=True, mandatory=True, desc="PVS probability (native grid)")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask (native grid)")
    threshold = traits.Float(0.0, usedefault=True, desc="probability threshold; 0 takes the model's")
    min_cluster_mm3 = traits.Float(2.0, usedefault=True, desc="smallest cluster kept (mm^3)")
    model_info = traits.Dict(mandatory=True, desc="segmentation method/model description")


class _MaskOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="PVS mask (uint8, native grid)")
    meta = traits.Dict(desc="threshold, minimum cluster size and method, for the sidecars")


class PVSMask(SimpleInterface):
    """Threshold the probability inside the brain and drop clusters below the minimum size."""

    input_spec = _MaskInputSpec
    output_spec = _MaskOutputSpec

    def _run_interface(self, runtime):
        from mednet_pvs.stats import pvs_mask, voxel_volume

        info = dict(self.inputs.model_info)
        threshold = (
            self.inputs.threshold or info.get("threshold") or info.get("parameters", {}).get("threshold")
        )
        prob_img = nib.load(self.inputs.probseg)
        brain = np.asarray(nib.load(self.inputs.brain_mask).dataobj) > 0
        mask = pvs_mask(
            np.asarray(prob_img.dataobj),
            float(threshold),
            self.inputs.min_cluster_mm3,
            voxel_volume(prob_img.affine),
            brain,
        )
        self._results["out_file"] = node_file(runtime, "pvs_mask.nii.gz")
        native_image(mask, prob_img, np.uint8).to_filename(self._results["out_file"])
        self._results["meta"] = {
            "Threshold": float(threshold),
            "MinClusterSizeMM3": self.inputs.min_cluster_mm3,
            "Method": info,
        }
        return runtime


class _StatsInputSpec(BaseInterfaceInputSpec):
    mask = File(exists=True, mandatory=True, desc="PVS mask (native grid)")
    probseg = File(exists=True, mandatory=True, desc="PVS probability (native grid)")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask (native grid)")
    regions = File(exists=True, desc="PVS region labels (native grid)")
    landmarks = traits.Dict(desc="landmarks in scanner mm, e.g. {'anterior_commissure': [x, y, z]}")


class _StatsOutputSpec(TraitedSpec):
    clusters = File(exists=True, desc="labelled clusters (native grid)")
    region_stats = File(exists=True, desc="region statistics TSV")
    census = File(exists=True, desc="per-cluster census TSV")
    region_stats_meta = traits.Dict(desc="column descriptions of the region table")
    census_meta = traits.Dict(desc="column descriptions of the census")
    summary = traits.Dict(desc="totals for the logs and the sidecars")


class PVSStatistics(SimpleInterface):
    """Clusters (26-connected), per-region statistics, census and slice-level counts."""

    input_spec = _StatsInputSpec
    output_spec = _StatsOutputSpec

    def _run_interface(self, runtime):
        from mednet_pvs.stats import compute_statistics, write_statistics
        from mednet_pvs.stats.outputs import derivative_path

        mask_img = nib.load(self.inputs.mask)
        regions = np.asarray(nib.load(self.inputs.regions).dataobj) if self.inputs.regions else None
        ac = (self.inputs.landmarks or {}).get("anterior_commissure")
        stats = compute_statistics(
            np.asarray(mask_img.dataobj) > 0,
            mask_img.affine,
            region_map=regions,
            probability=np.asarray(nib.load(self.inputs.probseg).dataobj),
            brain_mask=np.asarray(nib.load(self.inputs.brain_mask).dataobj) > 0,
            ac_position_mm=ac,
        )
        prefix = Path(runtime.cwd) / "pvs"
        write_statistics(prefix, stats, mask_img)
        self._results["clusters"] = str(derivative_path(prefix, "clusters"))
        self._results["region_stats"] = str(derivative_path(prefix, "morph"))
        self._results["census"] = str(derivative_path(prefix, "census"))
        for key, kind in (("region_stats_meta", "morph"), ("census_meta", "census")):
            sidecar = derivative_path(prefix, kind).with_suffix(".json")
            self._results[key] = json.loads(sidecar.read_text())
        self._results["summary"] = {
            "PVSCount": len(stats.census),
            "PVSVolumeMM3": float(stats.census["volume_mm3"].sum()) if len(stats.census) else 0.0,
        }
        return runtime

"""Interfaces for PVS segmentation: a MedNeXt (or imported nnU-Net) model, or Frangi vesselness."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from mednet_pvs.interfaces.images import node_file
from mednet_pvs.models.card import TTA_MIRRORINGS

__all__ = ["FrangiSegmentation", "ModelSegmentation"]


def _save_probability(runtime: object, probability: np.ndarray, like: nib.Nifti1Image) -> str:
    out = nib.Nifti1Image(probability.astype(np.float32), like.affine, like.header)
    out.set_data_dtype(np.float32)
    path = node_file(runtime, "probseg.nii")
    out.to_filename(path)
    return path


class _ModelInputSpec(BaseInterfaceInputSpec):
    in_file = File(
        exists=True, mandatory=True, desc="brain-extracted conformed image (zero outside the brain)"
    )
    model_dir = traits.Directory(
        exists=True, mandatory=True, desc="model directory (model.json + safetensors)"
    )
    contrast = traits.Str(desc="BIDS suffix of the image (a contrast the card reads inverted is negated)")
    device = traits.Str("auto", usedefault=True, desc="auto, cpu, cuda or cuda:N")
    tta = traits.Bool(True, usedefault=True, desc="mirroring test-time augmentation")
    tta_mirroring = traits.Enum(
        *TTA_MIRRORINGS, usedefault=True, desc="mirrorings TTA averages: all of the card's, or left-right"
    )
    folds = traits.List(traits.Int, usedefault=True, desc="folds to ensemble (empty: all)")
    threads = traits.Int(0, usedefault=True, desc="CPU threads for torch (0: torch default)")
    use_gpu = traits.Bool(
        False, usedefault=True, desc="marks the node as a GPU job for MultiProc's n_gpu_procs"
    )


class _ModelOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="PVS probability on the conformed grid (float32)")
    model_info = traits.Dict(desc="name, version and provenance of the model used")


class ModelSegmentation(SimpleInterface):
    """Run a model directory through the inference engine and return the PVS probability."""

    input_spec = _ModelInputSpec
    output_spec = _ModelOutputSpec

    def _run_interface(self, runtime):
        from mednet_pvs.inference.engine import InferenceSettings, Segmenter
        from mednet_pvs.models.card import ModelCard

        img = nib.load(self.inputs.in_file)
        card = ModelCard.load(self.inputs.model_dir)
        settings = InferenceSettings(
            device=self.inputs.device,
            tta=self.inputs.tta,
            tta_mirroring=self.inputs.tta_mirroring,
            folds=list(self.inputs.folds) or None,
            threads=self.inputs.threads or None,
            progress=False,
        )
        segmenter = Segmenter(self.inputs.model_dir, card, settings)
        contrast = self.inputs.contrast or None
        probability = segmenter.foreground_probability(
            np.asarray(img.dataobj, dtype=np.float32), img.header.get_zooms()[:3], contrast
        )
        self._results["out_file"] = _save_probability(runtime, probability, img)
        self._results["model_info"] = {
            "name": card.name,
            "version": card.version,
            "contrasts": card.contrasts,
            "inverted_contrasts": card.inverted_contrasts,
            "folds": segmenter.folds,
            "device": str(segmenter.device),
            "tta": self.inputs.tta,
            "tta_mirroring": self.inputs.tta_mirroring if self.inputs.tta else None,
            "threshold": card.threshold_for(contrast),
            "architecture": card.architecture.get("family"),
            "provenance": card.provenance,
        }
        return runtime


class _FrangiInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="conformed image")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the same grid")
    contrast = traits.Enum("T2w", "T1w", "FLAIR", mandatory=True, desc="input contrast (sets ridge polarity)")
    regions = File(exists=True, desc="PVS region labels; restricts the response to rated regions")


class _FrangiOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="vesselness in [0, 1) on the conformed grid")
    model_info = traits.Dict(desc="method and parameters")


class FrangiSegmentation(SimpleInterface):
    """Multiscale Frangi vesselness restricted to the brain (and rated regions when given)."""

    input_spec = _FrangiInputSpec
    output_spec = _FrangiOutputSpec

    def _run_interface(self, runtime):
        from dataclasses import asdict

        from mednet_pvs.classical.frangi import FrangiParameters, frangi_vesselness
        from mednet_pvs.regions.lut import REGIONS

        img = nib.load(self.inputs.in_file)
        brain = np.asarray(nib.load(self.inputs.brain_mask).dataobj) > 0
        restrict = None
        if self.inputs.regions:
            labels = np.asarray(nib.load(self.inputs.regions).dataobj)
            rated = [r.index for r in REGIONS if r.structure != "other"]
            restrict = np.isin(labels, rated) if np.isin(labels, rated).any() else None
        parameters = FrangiParameters()
        probability = frangi_vesselness(
            np.asarray(img.dataobj, dtype=np.float32),
            img.header.get_zooms()[:3],
            brain,
            self.inputs.contrast,
            parameters,
            restrict_mask=restrict,
        )
        self._results["out_file"] = _save_probability(runtime, probability, img)
        self._results["model_info"] = {"name": "frangi", "parameters": asdict(parameters)}
        return runtime

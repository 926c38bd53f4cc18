"""Write derivatives into the output dataset with BIDS names, atomically, with JSON sidecars."""

from __future__ import annotations

import shutil

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from mednet_pvs.bids import bids_uri, derivative_path
from mednet_pvs.utils.atomic import atomic_path, write_json

__all__ = ["DerivativesDataSink"]


class _SinkInputSpec(BaseInterfaceInputSpec):
    base_directory = traits.Directory(mandatory=True, desc="the derivative dataset (output_dir)")
    bids_dir = traits.Directory(mandatory=True, desc="the raw dataset (for Sources URIs)")
    source_file = File(mandatory=True, desc="the raw image the output derives from")
    in_file = File(exists=True, mandatory=True, desc="file to store")
    suffix = traits.Str(mandatory=True, desc="BIDS suffix, e.g. mask, probseg, dseg, morph")
    extension = traits.Str(".nii.gz", usedefault=True, desc="file extension")
    desc = traits.Str(desc="desc entity")
    label = traits.Str(desc="label entity")
    seg = traits.Str(desc="seg entity")
    meta = traits.Dict(desc="JSON sidecar content (Sources is added)")
    extra_meta = traits.Dict(desc="run-time sidecar content, merged over meta")
    derived_from = traits.List(traits.Str, desc="other outputs (file names in base_directory) this one uses")
    depends_on = traits.Any(desc="ignored; orders this sink after other nodes")


class _SinkOutputSpec(TraitedSpec):
    out_file = File(desc="the stored derivative")
    out_meta = File(desc="its JSON sidecar")


class DerivativesDataSink(SimpleInterface):
    """Copy a node output into the derivative dataset under its BIDS name (atomic rename).

    Always runs, so that outputs deleted from ``output_dir`` are restored from the work cache.
    """

    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        entities = {k: getattr(self.inputs, k) for k in ("desc", "label", "seg") if getattr(self.inputs, k)}
        out = derivative_path(
            self.inputs.base_directory,
            self.inputs.source_file,
            self.inputs.suffix,
            self.inputs.extension,
            **entities,
        )
        sources = [bids_uri(self.inputs.source_file, self.inputs.bids_dir, "raw")]
        sources += [f"bids::{name}" for name in self.inputs.derived_from]
        sidecar = {**(self.inputs.meta or {}), **(self.inputs.extra_meta or {}), "Sources": sources}
        meta_path = out.with_name(out.name[: -len(self.inputs.extension)] + ".json")
        with atomic_path(out) as tmp:
            shutil.copyfile(self.inputs.in_file, tmp)
        write_json(meta_path, sidecar)
        self._results["out_file"] = str(out)
        self._results["out_meta"] = str(meta_path)
        return runtime

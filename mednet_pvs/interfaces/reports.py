"""The per-participant report node (runs after all of the participant's outputs are stored)."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

__all__ = ["SubjectReport"]


class _ReportInputSpec(BaseInterfaceInputSpec):
    output_dir = traits.Directory(exists=True, mandatory=True, desc="the derivative dataset")
    subject = traits.Str(mandatory=True, desc="participant label (without 'sub-')")
    run_id = traits.Str(desc="run identifier (for the log)")
    depends_on = traits.Any(desc="ignored; makes the report wait for the participant's outputs")


class _ReportOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="sub-<label>.html")


class SubjectReport(SimpleInterface):
    """Write ``sub-<label>.html`` and its figures from the files in the output folder."""

    input_spec = _ReportInputSpec
    output_spec = _ReportOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        from mednet_pvs.reports.subject import write_subject_report

        path = write_subject_report(Path(self.inputs.output_dir), self.inputs.subject)
        self._results["out_file"] = str(path)
        return runtime

"""Methods boilerplate (what was done, with references) and software versions, as in fMRIPrep's reports.

The text is generated from what is known about the processing (``image_facts``), so it describes
the run rather than the defaults. Users may copy it into a manuscript; it names its references.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import Any

from mednet_pvs import __version__

__all__ = ["REFERENCES", "methods_text", "software_versions"]

#: Keyed references; only works whose details are certain are listed.
REFERENCES: dict[str, str] = {
    "bids": "Gorgolewski KJ et al. The brain imaging data structure, a format for organizing and describing "
    "outputs of neuroimaging experiments. Sci Data. 2016;3:160044. doi:10.1038/sdata.2016.44",
    "n4": "Tustison NJ et al. N4ITK: improved N3 bias correction. IEEE Trans Med Imaging. "
    "2010;29(6):1310-1320. "
    "doi:10.1109/TMI.2010.2046908",
    "ants": "Avants BB et al. A reproducible evaluation of ANTs similarity metric performance in brain image "
    "registration. NeuroImage. 2011;54(3):2033-2044. doi:10.1016/j.neuroimage.2010.09.025",
    "mednext": "Roy S et al. MedNeXt: Transformer-driven scaling of ConvNets for medical image segmentation. "
    "MICCAI 2023; arXiv:2303.09975.",
    "nnunet": "Isensee F et al. nnU-Net: a self-configuring method for deep learning-based biomedical image "
    "segmentation. Nat Methods. 2021;18(2):203-211. doi:10.1038/s41592-020-01008-z",
    "monai": "Cardoso MJ et al. MONAI: An open-source framework for deep learning in healthcare. "
    "arXiv:2211.02701, 2022.",
    "frangi": "Frangi AF et al. Multiscale vessel enhancement filtering. MICCAI 1998, LNCS 1496:130-137. "
    "doi:10.1007/BFb0056195",
    "freesurfer": "Fischl B. FreeSurfer. NeuroImage. 2012;62(2):774-781. "
    "doi:10.1016/j.neuroimage.2012.01.021",
    "cit168": "Pauli WM, Nili AN, Tyszka JM. A high-resolution probabilistic in vivo atlas of human "
    "subcortical "
    "brain nuclei. Sci Data. 2018;5:180063. doi:10.1038/sdata.2018.63",
    "scipy": "Virtanen P et al. SciPy 1.0: fundamental algorithms for scientific computing in Python. "
    "Nat Methods. 2020;17:261-272. doi:10.1038/s41592-019-0686-2",
    "potter": "Potter GM, Chappell FM, Morris Z, Wardlaw JM. Cerebral perivascular spaces visible on "
    "magnetic "
    "resonance imaging: development of a qualitative rating scale and its observer reliability. "
    "Cerebrovasc Dis. 2015;39(3-4):224-231. doi:10.1159/000375153",
    "strive": "Wardlaw JM et al. Neuroimaging standards for research into small vessel disease and its "
    "contribution to ageing and neurodegeneration. Lancet Neurol. 2013;12(8):822-838. "
    "doi:10.1016/S1474-4422(13)70124-8",
    "shivai": "Boutinaud P et al. 3D segmentation of perivascular spaces on T1-weighted 3 Tesla MR images "
    "with a "
    "convolutional autoencoder and a U-shaped neural network. Front Neuroinform. 2021;15:641600. "
    "doi:10.3389/fninf.2021.641600",
}

_PACKAGES = (
    "numpy",
    "scipy",
    "nibabel",
    "scikit-image",
    "pandas",
    "matplotlib",
    "torch",
    "monai",
    "antspyx",
    "nipype",
    "pybids",
    "nilearn",
)


def software_versions() -> dict[str, str]:
    """Versions of mednet-pvs and the libraries doing its work, in the environment running now."""
    versions = {"mednet-pvs": __version__}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _fmt(value: Any, default: str = "n/a") -> str:
    if value is None or value == "":
        return default
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def methods_text(facts: Mapping[str, Any], cited: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(paragraphs, reference keys in order of first citation) describing how an image was processed.

    Pass the same ``cited`` list for several images so that one reference list numbers them all.
    """
    cited = [] if cited is None else cited

    def cite(*keys: str) -> str:
        numbers = []
        for key in keys:
            if key not in cited:
                cited.append(key)
            numbers.append(str(cited.index(key) + 1))
        return f"[{', '.join(numbers)}]"

    version = _fmt(facts.get("version"), __version__)
    paragraphs = [
        f"Perivascular spaces (PVS) were segmented and quantified with mednet-pvs {version}, a BIDS App "
        f"{cite('bids')} whose outputs follow BIDS Derivatives. Each "
        f"{_fmt(facts.get('contrast'), 'anatomical')} "
        "image was reoriented to the closest RAS+ voxel order without resampling; every result was mapped "
        "back to the image's native grid exactly."
    ]
    steps = []
    if facts.get("n4") is True:
        steps.append(f"corrected for intensity non-uniformity with N4 {cite('n4')} as implemented in ANTsPy")
    elif facts.get("n4") is False:
        steps.append("not bias-corrected (N4 skipped on request)")
    skull = facts.get("skull_strip")
    if skull == "skipped":
        steps.append("used as brain-extracted by the user (skull stripping skipped)")
    elif skull:
        steps.append(f"skull-stripped ({_fmt(skull)})")
    if steps:
        paragraphs.append("Images were " + "; ".join(steps) + ".")

    method = facts.get("method")
    model = facts.get("model")
    if method == "frangi" or model == "frangi":
        segmentation = (
            f"PVS probability was approximated by multiscale Frangi vesselness {cite('frangi')} "
            "(a classical baseline, not a trained model)"
        )
    elif method is None and model is None:
        segmentation = "A PVS probability map was computed (the outputs do not record by which method)"
    else:
        model_name = _fmt(model, "a MedNeXt model")
        segmentation = (
            f"PVS were segmented with {model_name}"
            + (f" (version {_fmt(facts.get('model_version'))})" if facts.get("model_version") else "")
            + f", a MedNeXt network {cite('mednext')} run with an nnU-Net-style sliding-window predictor "
            f"{cite('nnunet')} on MONAI {cite('monai')}"
        )
        contrast = facts.get("contrast")
        if contrast and contrast in (facts.get("model_inverted_contrasts") or ()):
            trained_on = "/".join(facts.get("model_contrasts") or ()) or "another contrast"
            if contrast in (facts.get("model_trained_inverted") or ()):
                trained_on += f" and on {contrast} read inverted"
            segmentation += (
                f", the {contrast} image read with inverted intensities by a model trained on {trained_on}"
            )
        if facts.get("folds"):
            segmentation += f", averaging folds {_fmt(facts.get('folds'))}"
        if facts.get("tta") is not None:
            segmentation += ", with mirroring test-time augmentation" if facts.get("tta") else ", without TTA"
            if facts.get("tta") and facts.get("tta_mirroring") == "left-right":
                segmentation += " (the image and its left-right mirror)"
        if facts.get("device"):
            segmentation += f" on {_fmt(facts.get('device'))}"
    paragraphs.append(
        segmentation
        + f". The probability map was thresholded at {_fmt(facts.get('threshold'))} inside the brain "
        f"mask and 26-connected clusters smaller than {_fmt(facts.get('min_cluster_size_mm3'))} mm³ were "
        "discarded."
    )
    regions = _fmt(facts.get("regions"), "")
    if regions in ("freesurfer", "synthseg", "aseg") or "aseg" in regions:
        region_text = f"from the subject's own FreeSurfer/SynthSeg labels {cite('freesurfer')}"
    elif regions:
        region_text = f"from a template atlas registered to the subject with ANTs {cite('ants')} ({regions})"
    else:
        region_text = "from the region map supplied with the outputs"
    paragraphs.append(
        "Brain regions (centrum semiovale, deep white matter, basal ganglia, thalamus, hippocampus, "
        f"midbrain) were derived {region_text}. PVS were labelled as 26-connected clusters "
        f"{cite('scipy')}; each was assigned to the region holding most of its voxels and measured "
        "(volume, scanner-space centroid, length along its principal axis, cylinder-model diameter), "
        f"following the STRIVE definition of PVS {cite('strive')}. Automated counts on the basal-ganglia "
        "and centrum-semiovale rating slices were mapped to the categories of the Potter et al. scale "
        f"{cite('potter')}; they are estimates from the segmentation, not visual ratings."
    )
    return paragraphs, cited

"""Synthetic PVS phantoms: realistic brain MRI with the exact PVS ground truth.

``generate_subject(seed, contrasts, config)`` returns one :class:`Phantom`; ``write_dataset`` writes
a BIDS dataset with a ground-truth derivatives folder (``mednet-pvs-synth`` on the command line).
See docs/synthetic.md for the generative model.
"""

from mednet_pvs.synth.config import SynthConfig
from mednet_pvs.synth.dataset import write_dataset, write_subject
from mednet_pvs.synth.generator import DISTRACTOR_LABELS, Phantom, generate_subject, subject_seed

__all__ = [
    "DISTRACTOR_LABELS",
    "Phantom",
    "SynthConfig",
    "generate_subject",
    "subject_seed",
    "write_dataset",
    "write_subject",
]

"""Evaluation of PVS segmentations: voxel, detection and agreement metrics (``mednet-pvs-eval``).

See docs/evaluation.md for the definitions and their sources.
"""

from mednet_pvs.metrics.agreement import lin_ccc, spearman
from mednet_pvs.metrics.detection import DetectionCounts, match_any_overlap, match_iou, overlaps
from mednet_pvs.metrics.evaluate import Case, EvaluationResult, evaluate, evaluate_case, find_cases
from mednet_pvs.metrics.voxel import VoxelCounts, hd95, voxel_counts

__all__ = [
    "Case",
    "DetectionCounts",
    "EvaluationResult",
    "VoxelCounts",
    "evaluate",
    "evaluate_case",
    "find_cases",
    "hd95",
    "lin_ccc",
    "match_any_overlap",
    "match_iou",
    "overlaps",
    "spearman",
    "voxel_counts",
]

"""Test support: the official Cityscapes evaluators (cityscapesscripts) run in process on data written to a temporary
tree, with the numpy 2.x compatibility shims undone afterwards.

The harness lives in :mod:`genforecast.bench.eval` (``genforecast bench eval`` times the same evaluators); see its
docstring for the shims.
"""

from genforecast.bench.eval import (
    INSTANCE_EVALUATOR,
    PIXEL_EVALUATOR,
    InstancePrediction,
    OfficialEvaluatorError,
    official_evaluator,
    official_instance_ap,
    official_instance_ap_of_files,
    official_pixel_miou,
)

__all__ = [
    "INSTANCE_EVALUATOR",
    "PIXEL_EVALUATOR",
    "InstancePrediction",
    "OfficialEvaluatorError",
    "official_evaluator",
    "official_instance_ap",
    "official_instance_ap_of_files",
    "official_pixel_miou",
]

"""Non-learned forecasting baselines shared by the forecasting models: copy-last and optical-flow extrapolation.

They work on video frames, segmentation label maps, per-class score maps and instance masks alike.
"""

from baselines.copy_last import copy_last, copy_last_forecast
from baselines.optical_flow import batch_flow, extrapolate, flow_between, flow_forecast, warp_masks

__all__ = [
    "batch_flow",
    "copy_last",
    "copy_last_forecast",
    "extrapolate",
    "flow_between",
    "flow_forecast",
    "warp_masks",
]

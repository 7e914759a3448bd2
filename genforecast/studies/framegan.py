"""The Mathieu et al. study: copy-last and optical-flow baselines vs the trained ablation rows, Table 1's shape.

Every model is scored on the paper's protocol (every 10th video of test split 1 on real UCF101, every test video
of the demo set; full frames; 4 inputs; the 1st future frame and the 2nd predicted recursively) over the moving
areas (optical-flow mask, ``restrict`` convention: metrics over moving pixels only) and over the full frame.
"""

from __future__ import annotations

import argparse
import os

from genforecast.study import Stage, fit_and_validate, publish_results, study_setup

VARIANTS = {variant: Stage(f"framegan/{variant}", ("framegan/demo/train",))
            for variant in ("single_scale_l2", "l2", "l1", "gdl_l1", "adv", "adv_gdl")}
"""Table 1's rows, in its order."""
DEMO_VARIANTS = ("gdl_l1", "adv_gdl")
"""The rows of the study; ``--all-variants`` runs all of Table 1."""
DEMO_STAGES = [VARIANTS[variant] for variant in DEMO_VARIANTS]
METRICS = [("psnr", "PSNR"), ("ssim", "SSIM"), ("sharpness", "sharp.")]


def region_columns(region: str) -> list[tuple[str, str]]:
    """The columns of the ``"moving"`` areas or ``"full"`` frames table: each metric of the 1st and 2nd frame."""
    return [("row", "method")] + [(f"{name}_{region}_{step}", f"{label} {step}{'st' if step == 1 else 'nd'}")
                                  for step in (1, 2) for name, label in METRICS]


def _rows(variant: str, metrics: dict[str, float], with_baselines: bool) -> list[dict[str, object]]:
    predictors = ["copy_last", "optical_flow", "model"] if with_baselines else ["model"]
    names = {"copy_last": "copy last input", "optical_flow": "optical flow extrapolation", "model": variant}
    rows = []
    for predictor in predictors:
        prefix = f"val/{predictor}/"
        row: dict[str, object] = {"row": names[predictor]}
        row.update({key[len(prefix):]: value for key, value in metrics.items() if key.startswith(prefix)})
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> None:
    setup = study_setup(args, "ucf101", "UCF101_ROOT")
    rows: list[dict[str, object]] = []
    for index, variant in enumerate(VARIANTS if args.all_variants else DEMO_VARIANTS):
        trained = fit_and_validate(VARIANTS[variant].files(setup), setup.overrides)
        rows += _rows(variant, trained.metrics, with_baselines=index == 0)
    source = "procedural UCF101-format demo" if setup.demo else os.environ["UCF101_ROOT"]
    publish_results(args, "framegan", f"Mathieu et al. 2016 study ({source})",
                    {"moving areas": (rows, region_columns("moving")), "full frames": (rows, region_columns("full"))}, rows=rows)

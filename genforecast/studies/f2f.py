"""The F2F study: detector, F2F forecaster, then the paper's results table (F2F vs copy vs flow vs oracle).

Without ``CITYSCAPES_DATASET`` it writes the procedural Cityscapes-format demo set, trains the demo detector
(the same ``MaskRCNNFinetune`` code with a lighter backbone) and a narrow F2F with all levels trained jointly
(``configs/f2f/demo/``), then scores the one forecaster mid-term (3 autoregressive steps) and short-term (one
step) on the validation sequences. With ``CITYSCAPES_DATASET`` and ``F2F_DETECTOR`` set it runs the paper's
configs; the full schedule (P5, P4, P3, P2, AR fine-tuning) is ``configs/f2f/{p5,p4,p3,p2,ar_finetune}.yaml``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from genforecast.study import (
    FORECAST_COLUMNS,
    fit_and_validate,
    forecast_rows,
    publish_results,
    study_setup,
    validate,
    write_rows,
)

ROWS = {"model": "F2F (forecast features)", "copy_last": "copy last frame (detector)",
        "optical_flow": "optical-flow warp (detector masks)", "oracle": "oracle (detector on target)"}


def run(args: argparse.Namespace) -> None:
    setup = study_setup(args, "cityscapes", "CITYSCAPES_DATASET")
    configs, presets, demo, overrides = setup.configs, setup.presets, setup.demo, setup.overrides
    detector = Path(os.environ.get("F2F_DETECTOR", "outputs/f2f/detector/detector.pt"))
    if not detector.is_file():
        overlay = [configs / "f2f" / "demo" / "detector.yaml"] if demo else []
        fit_and_validate([*presets, configs / "f2f" / "detector.yaml", *overlay], overrides)
    forecaster = [configs / "f2f" / ("ar_finetune.yaml" if not demo else "p5.yaml")]
    overlay = [configs / "f2f" / "demo" / "f2f.yaml"] if demo else []
    trained = fit_and_validate([*presets, *forecaster, *overlay], overrides)
    checkpoint = Path("outputs") / "f2f" / ("demo_all_levels" if demo else "ar_finetune") / "checkpoints" / "last.ckpt"
    short = validate([*presets, *forecaster, *overlay],
                     [*overrides, f"--ckpt_path={checkpoint}", "--data.init_args.horizon=short",
                      "--model.init_args.horizon_steps=1"])
    rows = forecast_rows(ROWS, short, trained, trained="model")
    write_rows("f2f", rows)
    source = "procedural Cityscapes-format demo" if demo else os.environ["CITYSCAPES_DATASET"]
    publish_results(args, "f2f", f"F2F study ({source}), instance AP / AP50 and MO-mIoU in %",
                    {"forecasting": (rows, FORECAST_COLUMNS)})

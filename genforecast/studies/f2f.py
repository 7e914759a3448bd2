"""The F2F study: detector, F2F forecaster, then the paper's results table (F2F vs copy vs flow vs oracle).

Without ``CITYSCAPES_DATASET`` it writes the procedural Cityscapes-format demo set, trains the demo detector
(the same ``MaskRCNNFinetune`` code with a lighter backbone) and a narrow F2F with all levels trained jointly
(``configs/f2f/demo/``), then scores the one forecaster mid-term (3 autoregressive steps) and short-term (one
step) on the validation sequences. With ``CITYSCAPES_DATASET`` and ``F2F_DETECTOR`` set it runs the paper's
schedule, ``configs/f2f/{p5,p4,p3,p2,ar_finetune}.yaml`` in order, and scores the AR fine-tuned model. There a
stage whose newest run has a ``last.ckpt`` is resumed from it (``--ckpt_path last``): a killed study picks up
where it stopped and a finished stage returns at once; remove ``outputs/f2f/<stage>/latest`` to retrain one (its
run folder stays). The demo always trains new runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from genforecast import runs
from genforecast.study import (
    FORECAST_COLUMNS,
    Stage,
    fit_and_validate,
    forecast_rows,
    publish_results,
    study_setup,
    validate,
)

SCHEDULE = ("p5", "p4", "p3", "p2", "ar_finetune")
"""The paper's stages on real data, each initialised from the previous one's last checkpoint (see the configs)."""
DETECTOR = Stage("f2f/detector", ("f2f/demo/detector",))
DEMO_FORECASTER = Stage("f2f/p5", ("f2f/demo/f2f",))
"""On the demo, one forecaster of all levels (the overlay) instead of the schedule."""
DEMO_STAGES = [DETECTOR, DEMO_FORECASTER]

ROWS = {"model": "F2F (forecast features)", "copy_last": "copy last frame (detector)",
        "optical_flow": "optical-flow warp (detector masks)", "oracle": "oracle (detector on target)"}


def run(args: argparse.Namespace) -> None:
    setup = study_setup(args, "cityscapes", "CITYSCAPES_DATASET")
    detector = Path(os.environ.get("F2F_DETECTOR", runs.latest_file("f2f", "detector", "detector.pt")))
    if not detector.is_file():
        fit_and_validate(DETECTOR.files(setup), setup.overrides)
    stages = [DEMO_FORECASTER] if setup.demo else [Stage(f"f2f/{stage}") for stage in SCHEDULE]
    resume = [] if setup.demo else ["--ckpt_path=last"]  # a stage with a newest run resumes (or returns) from it
    for stage in stages:
        trained = fit_and_validate(stage.files(setup), [*setup.overrides, *resume])
    short = validate(stages[-1].files(setup),
                     [*setup.overrides, f"--ckpt_path={trained.last_checkpoint}", "--data.init_args.horizon=short",
                      "--model.init_args.horizon_steps=1"])
    rows = forecast_rows(ROWS, short, trained, trained="model")
    source = "procedural Cityscapes-format demo" if setup.demo else os.environ["CITYSCAPES_DATASET"]
    publish_results(args, "f2f", f"F2F study ({source}), instance AP / AP50 and MO-mIoU in %",
                    {"forecasting": (rows, FORECAST_COLUMNS)}, rows=rows)

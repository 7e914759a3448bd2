"""The joint forecasting study: the JointForecaster mid- and short-term against copy and flow, in F2F's table.

Without ``CITYSCAPES_DATASET`` it writes the procedural Cityscapes-format demo set and trains on the
representation of its per-frame annotations (``configs/joint/demo/``). On Cityscapes the past frames' objects
come from the exported segmenter and detector (``CITYSCAPES_SEGMENTER``, ``F2F_DETECTOR``; train them with
``make train-segforecast`` and ``make train-f2f``). One mid-term (3 autoregressive steps) model is trained and
scored mid-term, then short-term (one step) from the same checkpoint, as the F2F study does.

The printed table is the talk's: method, semantic and instance scores per horizon, training time and network
size; when the F2F study has run (``outputs/f2f/study/latest/results.json``) its rows are included.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from genforecast import runs
from genforecast.cli import UserError
from genforecast.study import (
    FORECAST_COLUMNS,
    Stage,
    fit_and_validate,
    forecast_rows,
    publish_results,
    read_rows,
    study_setup,
    validate,
)

FORECASTER = Stage("joint/distance_ar", ("joint/demo/forecaster",))
DEMO_STAGES = [FORECASTER]

ROWS = {"model": "distance maps (JointForecaster)", "copy_last": "copy last frame (its objects)",
        "optical_flow": "optical-flow warp (its objects)"}


def run(args: argparse.Namespace) -> None:
    setup = study_setup(args, "cityscapes", "CITYSCAPES_DATASET")
    if not setup.demo:
        for variable, default in (("CITYSCAPES_SEGMENTER", runs.latest_file("segforecast", "segmenter", "segmenter.pt")),
                                  ("F2F_DETECTOR", runs.latest_file("f2f", "detector", "detector.pt"))):
            if not Path(os.environ.get(variable, default)).is_file():
                raise UserError(f"the joint study on Cityscapes needs the exported models: {variable} (or {default}) "
                                 f"does not exist; run `make train-segforecast` and `make train-f2f` first")
    config = FORECASTER.files(setup)
    mid = fit_and_validate(config, setup.overrides)
    short = validate(config, [*setup.overrides, f"--ckpt_path={mid.last_checkpoint}", "--data.init_args.horizon=short",
                              "--model.init_args.horizon_steps=1"])
    rows = forecast_rows(ROWS, short, mid, trained="model")
    f2f_rows = read_rows("f2f")
    source = "procedural Cityscapes-format demo" if setup.demo else os.environ["CITYSCAPES_DATASET"]
    note = "" if f2f_rows else "\n(no F2F rows: run `make train-f2f` to add them)"
    publish_results(args, "joint", f"Future instance and semantic segmentation ({source}), in %",
                    {"forecasting": (f2f_rows + rows, FORECAST_COLUMNS)}, note, rows=rows)

"""The S2S study: segmenter, then S2S autoregressive and AR fine-tuned, scored mid-term against copy and flow.

Without ``CITYSCAPES_DATASET`` it writes the procedural Cityscapes-format demo set and trains the demo segmenter
(``configs/segforecast/demo/``); the forecasters then train on its scores, with the demo overlays
(``forecaster.yaml`` for both runs, ``ar_finetune.yaml`` on top for the fine-tuning). The AR fine-tuned row
starts from the autoregressive run's last checkpoint, as in the paper.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from genforecast import runs
from genforecast.study import Stage, StageRun, fit_and_validate, publish_results, study_setup

SEGMENTER = Stage("segforecast/segmenter", ("segforecast/demo/segmenter",))
AUTOREGRESSIVE = Stage("segforecast/s2s_ar", ("segforecast/demo/forecaster",))
FINETUNED = Stage("segforecast/s2s_ar_finetune", ("segforecast/demo/forecaster", "segforecast/demo/ar_finetune"))
DEMO_STAGES = [SEGMENTER, AUTOREGRESSIVE, FINETUNED]

ROWS = {"copy_last": "copy last segmentation", "optical_flow": "optical-flow warp"}
COLUMNS = [("row", "method"), ("miou_gt", "mIoU (GT)"), ("mo_miou_gt", "MO-mIoU (GT)"),
           ("miou_segmenter", "mIoU (segmenter)"), ("mo_miou_segmenter", "MO-mIoU (segmenter)")]


def _row(name: str, predictor: str, stage: StageRun) -> dict[str, object]:
    prefix = f"val/{predictor}/"
    return {"row": name} | {key[len(prefix):]: 100 * value for key, value in stage.metrics.items()
                            if key.startswith(prefix)}


def run(args: argparse.Namespace) -> None:
    setup = study_setup(args, "cityscapes", "CITYSCAPES_DATASET")
    segmenter = Path(os.environ.get("CITYSCAPES_SEGMENTER", runs.latest_file("segforecast", "segmenter",
                                                                              "segmenter.pt")))
    if not segmenter.is_file():
        fit_and_validate(SEGMENTER.files(setup), setup.overrides)
    autoregressive = fit_and_validate(AUTOREGRESSIVE.files(setup), setup.overrides)
    start_from = f"--model.init_args.init_weights={autoregressive.last_checkpoint}"
    finetuned = fit_and_validate(FINETUNED.files(setup), [*setup.overrides, start_from])
    rows = [_row(name, predictor, autoregressive) for predictor, name in ROWS.items()]
    rows += [_row("S2S autoregressive", "model", autoregressive), _row("S2S AR fine-tuned", "model", finetuned)]
    source = "procedural Cityscapes-format demo" if setup.demo else os.environ["CITYSCAPES_DATASET"]
    publish_results(args, "segforecast", f"S2S study, mid-term ({source}), in %", {"mid-term": (rows, COLUMNS)},
                    rows=rows)

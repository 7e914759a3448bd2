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

from genforecast.study import fit_and_validate, markdown_table, study_setup, validate

ROWS = {"model": "F2F (forecast features)", "copy_last": "copy last frame", "optical_flow": "optical-flow warp",
        "oracle": "oracle (detector on target)"}


def _columns() -> list[tuple[str, str]]:
    return [("row", "method")] + [(f"{horizon}/{metric}", f"{horizon} {label}") for horizon in ("short", "mid")
                                  for metric, label in (("ap50", "AP50"), ("ap", "AP"), ("mo_miou", "MO-mIoU"))]


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
    rows = []
    for predictor, name in ROWS.items():
        row: dict[str, object] = {"row": name}
        for horizon, metrics in (("mid", trained), ("short", short)):
            for metric in ("ap50", "ap", "mo_miou"):
                row[f"{horizon}/{metric}"] = 100 * metrics.get(f"val/{predictor}/{metric}", float("nan"))
        rows.append(row)
    table = markdown_table(rows, _columns())
    output = Path("outputs") / "f2f" / "results.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    details = (f"F2F: {trained['parameters'] / 1e6:.2f}M trained parameters, "
               f"{trained['train_seconds'] / 60:.1f} min of training")
    output.write_text(f"{table}\n\n{details}\n")
    print("\nF2F study (" + ("procedural Cityscapes-format demo" if demo else os.environ["CITYSCAPES_DATASET"])
          + "), instance AP / AP50 and MO-mIoU in %\n\n" + table + "\n\n" + details)
    print(f"\nwritten to {output}")

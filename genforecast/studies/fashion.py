"""The DesIGN study: GAN vs CAN vs CAN(H), trained identically, scored with the shape/texture classifier.

On the procedural demo catalogue (the default when ``FASHION_CATALOGUE`` is not set) the demo overlays of
``configs/fashion/demo/`` shrink the runs to minutes on a CPU. The expected outcome, the paper's claim that
the creativity losses move samples away from the known classes, reads as a higher shape and texture
classifier entropy for CAN(H) than for the GAN, with the classifier-feature FID beside it for realism.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from genforecast import runs
from genforecast.study import fit_and_validate, publish_results, study_setup

COLUMNS = [("variant", "variant"), ("val/shape_entropy", "shape entropy"), ("val/texture_entropy", "texture entropy"),
           ("val/shape_score", "shape score"), ("val/texture_score", "texture score"),
           ("val/fid_classifier", "FID (classifier feat.)"), ("val/novelty", "novelty (NN dist.)"),
           ("val/mean_intensity", "mean intensity"), ("val/darkness", "darkness"), ("val/skewness", "skewness")]


def run(args: argparse.Namespace) -> None:
    setup = study_setup(args, "fashion", "FASHION_CATALOGUE")
    configs, presets, demo, overrides = setup.configs, setup.presets, setup.demo, setup.overrides
    classifier_path = Path(os.environ.get("FASHION_CLASSIFIER", runs.latest_file("fashion", "classifier",
                                                                                  "classifier.pt")))
    if not classifier_path.is_file():
        overlay = [configs / "fashion" / "demo" / "classifier.yaml"] if demo else []
        classifier = fit_and_validate([*presets, configs / "fashion" / "classifier.yaml", *overlay], overrides)
        print(f"classifier: {classifier.metrics}")
    variants = ["gan", "can", "canh"] + (["gan_shape", "can_shape", "canh_shape"] if args.all_variants else [])
    rows = []
    for variant in variants:
        overlay = [configs / "fashion" / "demo" / "gan.yaml"] if demo else []
        trained = fit_and_validate([*presets, configs / "fashion" / f"{variant}.yaml", *overlay], overrides)
        rows.append({"variant": variant, **trained.metrics})
    source = "procedural demo catalogue" if demo else os.environ["FASHION_CATALOGUE"]
    publish_results(args, "fashion", f"DesIGN study ({source})", {"variants": (rows, COLUMNS)}, rows=rows)

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
from genforecast.study import Stage, fit_and_validate, publish_results, study_setup

CLASSIFIER = Stage("fashion/classifier", ("fashion/demo/classifier",))
VARIANTS = {variant: Stage(f"fashion/{variant}", ("fashion/demo/gan",))
            for variant in ("gan", "can", "canh", "gan_shape", "can_shape", "canh_shape")}
DEMO_VARIANTS = ("gan", "can", "canh")
"""The variants of the study; ``--all-variants`` adds the shape-conditioned ones."""
DEMO_STAGES = [CLASSIFIER, *(VARIANTS[variant] for variant in DEMO_VARIANTS)]

COLUMNS = [("variant", "variant"), ("val/shape_entropy", "shape entropy"), ("val/texture_entropy", "texture entropy"),
           ("val/shape_score", "shape score"), ("val/texture_score", "texture score"),
           ("val/fid_classifier", "FID (classifier feat.)"), ("val/novelty", "novelty (NN dist.)"),
           ("val/mean_intensity", "mean intensity"), ("val/darkness", "darkness"), ("val/skewness", "skewness")]


def run(args: argparse.Namespace) -> None:
    setup = study_setup(args, "fashion", "FASHION_CATALOGUE")
    classifier_path = Path(os.environ.get("FASHION_CLASSIFIER", runs.latest_file("fashion", "classifier",
                                                                                  "classifier.pt")))
    if not classifier_path.is_file():
        classifier = fit_and_validate(CLASSIFIER.files(setup), setup.overrides)
        print(f"classifier: {classifier.metrics}")
    rows = []
    for variant in VARIANTS if args.all_variants else DEMO_VARIANTS:
        trained = fit_and_validate(VARIANTS[variant].files(setup), setup.overrides)
        rows.append({"variant": variant, **trained.metrics})
    source = "procedural demo catalogue" if setup.demo else os.environ["FASHION_CATALOGUE"]
    publish_results(args, "fashion", f"DesIGN study ({source})", {"variants": (rows, COLUMNS)}, rows=rows)

"""The demo study of ``make human-study``: the FashionCAN demo study's checkpoints, rated by people.

``genforecast study fashion`` trains the shape/texture classifier and the gan, can and canh variants on the
procedural demo catalogue; this module finds their checkpoints, writes a study file for them next to the study
folder, and creates the study (once: an existing demo study is reused, with its answers).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

DEMO_VARIANTS = ("gan", "can", "canh")
DEMO_SETTINGS = {"name": "fashion-demo", "images_per_variant": 20, "controls": 20, "ratings_per_item": 3,
                 "ratings_per_rater": 20, "pairs_per_rater": 10, "seed": 0}


def last_checkpoint(outputs: str | Path, family: str, variant: str) -> Path | None:
    """A variant's last checkpoint: ``<outputs>/<family>/<variant>/latest/checkpoints/last.ckpt`` (run folders
    with a ``latest`` link) or else ``<outputs>/<family>/<variant>/checkpoints/last.ckpt``; None if neither exists."""
    folder = Path(outputs) / family / variant
    for candidate in (folder / "latest" / "checkpoints" / "last.ckpt", folder / "checkpoints" / "last.ckpt"):
        if candidate.is_file():
            return candidate
    return None


def classifier_path(outputs: str | Path) -> Path:
    """Where the fashion study exports its classifier (``FASHION_CLASSIFIER`` wins, as in the configs)."""
    return Path(os.environ.get("FASHION_CLASSIFIER", Path(outputs) / "fashion" / "classifier" / "classifier.pt"))


def missing_inputs(outputs: str | Path) -> list[str]:
    """What the demo study needs and does not find: checkpoints of the demo variants, the classifier."""
    missing = [f"{variant} checkpoint" for variant in DEMO_VARIANTS if last_checkpoint(outputs, "fashion", variant)
               is None]
    return missing + ([] if classifier_path(outputs).is_file() else ["classifier"])


def demo_study_file(outputs: str | Path, demo_root: str | Path, study_dir: str | Path) -> Path:
    """Write ``<study_dir>.yaml`` naming the demo checkpoints, classifier and catalogue; returns its path."""
    from genforecast.demo_data.cli import ensure_demo_dataset

    catalogue = Path(os.environ["FASHION_CATALOGUE"]) if "FASHION_CATALOGUE" in os.environ else (
        ensure_demo_dataset("fashion", demo_root))
    variants = {}
    for variant in DEMO_VARIANTS:
        checkpoint = last_checkpoint(outputs, "fashion", variant)
        if checkpoint is None:
            raise FileNotFoundError(f"no {variant} checkpoint under {outputs}/fashion: run `genforecast study fashion`")
        variants[variant] = str(checkpoint.resolve())
    data = {**DEMO_SETTINGS, "catalogue": str(catalogue.resolve()),
            "classifier": str(classifier_path(outputs).resolve()), "variants": variants}
    path = Path(f"{Path(study_dir)}.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by `genforecast human-study demo` (make human-study).\n" + yaml.safe_dump(data))
    return path

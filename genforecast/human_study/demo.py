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
LAST_CHECKPOINT = "checkpoints/last.ckpt"
DEMO_SETTINGS = {"name": "fashion-demo", "images_per_variant": 20, "controls": 20, "ratings_per_item": 3,
                 "ratings_per_rater": 20, "pairs_per_rater": 10, "seed": 0}


def run_file(outputs: str | Path, family: str, variant: str, relative: str) -> Path | None:
    """A file a variant's newest run wrote: ``<outputs>/<family>/<variant>/latest/<relative>`` (run folders with a
    ``latest`` link), else ``<outputs>/<family>/<variant>/<relative>`` (the older single-folder layout); None if
    neither exists. E.g. ``relative="checkpoints/last.ckpt"``, or ``"classifier.pt"`` for the exported classifier."""
    folder = Path(outputs) / family / variant
    for candidate in (folder / "latest" / relative, folder / relative):
        if candidate.is_file():
            return candidate
    return None


def classifier_path(outputs: str | Path) -> Path | None:
    """The fashion study's exported classifier (``FASHION_CLASSIFIER`` wins, as in the configs), or None."""
    if "FASHION_CLASSIFIER" in os.environ:
        path = Path(os.environ["FASHION_CLASSIFIER"])
        return path if path.is_file() else None
    return run_file(outputs, "fashion", "classifier", "classifier.pt")


def missing_inputs(outputs: str | Path) -> list[str]:
    """What the demo study needs and does not find: checkpoints of the demo variants, the classifier."""
    missing = [f"{variant} checkpoint" for variant in DEMO_VARIANTS
               if run_file(outputs, "fashion", variant, LAST_CHECKPOINT) is None]
    return missing + ([] if classifier_path(outputs) is not None else ["classifier"])


def demo_study_file(outputs: str | Path, demo_root: str | Path, study_dir: str | Path) -> Path:
    """Write ``<study_dir>.yaml`` naming the demo checkpoints, classifier and catalogue; returns its path."""
    from genforecast.demo_data.cli import ensure_demo_dataset

    catalogue = Path(os.environ["FASHION_CATALOGUE"]) if "FASHION_CATALOGUE" in os.environ else (
        ensure_demo_dataset("fashion", demo_root))
    missing = missing_inputs(outputs)
    if missing:
        raise FileNotFoundError(f"no {', '.join(missing)} under {outputs}/fashion: run `genforecast study fashion`")
    # resolve(): the study file names the run a `latest` link points at now, not whatever it points at later.
    variants = {variant: str(run_file(outputs, "fashion", variant, LAST_CHECKPOINT).resolve())
                for variant in DEMO_VARIANTS}
    data = {**DEMO_SETTINGS, "catalogue": str(catalogue.resolve()),
            "classifier": str(classifier_path(outputs).resolve()), "variants": variants}
    path = Path(f"{Path(study_dir)}.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    # sort_keys=False: the study file's variant order is the report's order (and simulate's preference order).
    header = "# Written by `genforecast human-study demo` (make human-study).\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return path

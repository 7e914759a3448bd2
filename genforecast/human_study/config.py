"""The study file: what a human rating study shows, to whom, how often, and with which words.

A study file is YAML. Paths are relative to the file's folder. Only ``catalogue`` and ``variants`` are required::

    name: design-fashion              # shown nowhere to raters; names the W&B run and the report
    catalogue: ../data/demo/fashion_catalogue   # real images: the human-made controls (and the novelty reference)
    catalogue_layout: catalogue       # or deepfashion (its train partition)
    classifier: ../outputs/fashion/classifier/classifier.pt   # optional: automatic scores per generated image
    variants:                         # variant name -> FashionCAN checkpoint (never shown to raters)
      gan: ../outputs/fashion/gan/checkpoints/last.ckpt
      canh: ../outputs/fashion/canh/checkpoints/last.ckpt
    images_per_variant: 40            # distinct generated images per variant
    controls: 40                      # real catalogue images mixed in as controls
    seed: 0                           # generation and control draws
    ratings_per_item: 5               # target number of ratings of every image
    ratings_per_rater: 20             # rating tasks per rater
    pairs_per_rater: 10               # pairwise tasks per rater, after the ratings
    pair_controls: false              # also pair real images against the variants (a "real" level in the ranking)
    original_threshold: 4             # a novelty rating >= this counts as "original" in the report
    display_px: 256                   # on-screen size of every image (all images have the checkpoints' resolution)
    questions: {...}                  # wording, see Questions; any field left out keeps its default

The defaults of the wording are the :class:`Questions` field defaults below (the DesIGN talk names the three
questions but not their exact wording or scales, so the tool states its own and lets a study change them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Scale:
    """A 1-5 rating question: the prompt and the words for its lowest and highest value."""

    prompt: str
    low: str
    high: str


@dataclass(frozen=True)
class Questions:
    """Everything a rater reads. Defaults are the tool's own wording (see the module docstring)."""

    title: str = "Rate fashion designs"
    consent: str = (
        "You are invited to rate images of garments for a research study on design. It takes about ten minutes. "
        "We record only your answers and how long each took, under a random anonymous id kept in a cookie of this "
        "browser; no name, e-mail or IP address is stored. You may stop at any time by closing this page.")
    consent_checkbox: str = "I have read the above and agree to take part."
    instructions: str = (
        "You will see one design at a time. Answer the three questions with the mouse, or with the keyboard: "
        "keys 1 to 5 answer the highlighted question, H or C answer the last one, Enter goes to the next design. "
        "Then you will see pairs of designs: click the one you prefer, or press the left or right arrow key.")
    likability: Scale = Scale("How much do you like this design?", "not at all", "very much")
    novelty: Scale = Scale("How novel or original is this design?", "not at all original", "very original")
    origin_prompt: str = "Was this design created by a human designer or by a computer?"
    origin_human: str = "a human designer"
    origin_computer: str = "a computer"
    pair_prompt: str = "Which of these two designs do you prefer?"
    thanks: str = "Thank you: your answers are recorded. You can close this page."


@dataclass(frozen=True)
class StudyConfig:
    """A parsed study file (see the module docstring for the meaning and defaults of each field)."""

    catalogue: Path
    variants: dict[str, Path]
    name: str = "human-study"
    catalogue_layout: str = "catalogue"
    classifier: Path | None = None
    images_per_variant: int = 40
    controls: int = 40
    seed: int = 0
    ratings_per_item: int = 5
    ratings_per_rater: int = 20
    pairs_per_rater: int = 10
    pair_controls: bool = False
    original_threshold: int = 4
    display_px: int = 256
    questions: Questions = field(default_factory=Questions)

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError("a study needs at least one variant (variants: {name: checkpoint})")
        for name in self.variants:
            # Variant names end up in the database and reports; "control" is the real images' group.
            if not name or name == CONTROL or not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"variant name {name!r} must be letters, digits, '_' or '-' and not {CONTROL!r}")
        counts = {"images_per_variant": self.images_per_variant, "ratings_per_item": self.ratings_per_item,
                  "display_px": self.display_px}
        for key, value in counts.items():
            if value < 1:
                raise ValueError(f"{key} must be at least 1, got {value}")
        for key in ("controls", "ratings_per_rater", "pairs_per_rater"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must not be negative, got {getattr(self, key)}")
        if not 1 <= self.original_threshold <= 5:
            raise ValueError(f"original_threshold must be in 1..5, got {self.original_threshold}")
        if self.catalogue_layout not in ("catalogue", "deepfashion"):
            raise ValueError(f"catalogue_layout must be catalogue or deepfashion, got {self.catalogue_layout!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (paths as strings), written into the study folder as ``study.json``."""
        data = dataclasses.asdict(self)
        data["catalogue"] = str(self.catalogue)
        data["classifier"] = str(self.classifier) if self.classifier is not None else None
        data["variants"] = {name: str(path) for name, path in self.variants.items()}
        return data


CONTROL = "control"
"""The group name of the real catalogue images (the human-made controls) in the database and the report."""


def _questions(data: dict[str, Any]) -> Questions:
    known = {f.name for f in dataclasses.fields(Questions)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown question fields {sorted(unknown)}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("likability", "novelty"):
            default = getattr(Questions(), key)
            values[key] = Scale(**{**dataclasses.asdict(default), **dict(value)})
        else:
            values[key] = str(value)
    return Questions(**values)


def study_config_from_dict(data: dict[str, Any], base: Path) -> StudyConfig:
    """Build a :class:`StudyConfig` from parsed YAML/JSON; relative paths are resolved against ``base``.

    Unknown keys are errors (a misspelt key would otherwise silently keep its default).
    """
    known = {f.name for f in dataclasses.fields(StudyConfig)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown study file keys {sorted(unknown)}; known: {sorted(known)}")
    for key in ("catalogue", "variants"):
        if key not in data:
            raise ValueError(f"the study file needs {key!r}")

    def resolve(path: str | Path) -> Path:
        path = Path(path).expanduser()
        return path if path.is_absolute() else (base / path).resolve()

    values = dict(data)
    values["catalogue"] = resolve(data["catalogue"])
    values["variants"] = {str(name): resolve(path) for name, path in dict(data["variants"]).items()}
    if data.get("classifier") is not None:
        values["classifier"] = resolve(data["classifier"])
    values["questions"] = _questions(dict(data.get("questions") or {}))
    return StudyConfig(**values)


def load_study_config(path: str | Path) -> StudyConfig:
    """Read a study file (YAML, or the ``study.json`` a study folder holds)."""
    path = Path(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a study file is a mapping of keys to values")
    return study_config_from_dict(data, path.parent.resolve())

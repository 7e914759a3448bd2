"""The study file: defaults, relative paths, partial wording overrides, and errors for what would be misread."""

from __future__ import annotations

from pathlib import Path

import pytest

from genforecast.human_study.config import Questions, load_study_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_minimal_file_gets_the_stated_defaults_and_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    config = load_study_config(write(tmp_path, "catalogue: data/cat\nvariants: {gan: ckpt/gan.ckpt}\n"))
    assert config.catalogue == tmp_path / "data" / "cat"
    assert config.variants == {"gan": tmp_path / "ckpt" / "gan.ckpt"}
    assert config.classifier is None
    assert (config.images_per_variant, config.controls, config.ratings_per_item) == (40, 40, 5)
    assert (config.ratings_per_rater, config.pairs_per_rater, config.original_threshold) == (20, 10, 4)
    assert config.questions == Questions()
    assert config.questions.likability.prompt == "How much do you like this design?"
    assert config.questions.origin_prompt == "Was this design created by a human designer or by a computer?"


def test_wording_can_be_changed_one_field_at_a_time(tmp_path: Path) -> None:
    config = load_study_config(write(tmp_path, """
catalogue: /data/cat
variants: {gan: /c/gan.ckpt, canh: /c/canh.ckpt}
questions:
  novelty: {prompt: "How new does this garment look?"}
  origin_human: "a fashion designer"
"""))
    assert config.catalogue == Path("/data/cat")
    assert config.questions.novelty.prompt == "How new does this garment look?"
    assert config.questions.novelty.low == Questions().novelty.low
    assert config.questions.origin_human == "a fashion designer"
    assert config.questions.likability == Questions().likability
    assert list(config.variants) == ["gan", "canh"]  # study-file order is the report's order


@pytest.mark.parametrize(("text", "message"), [
    ("variants: {gan: a.ckpt}\n", "needs 'catalogue'"),
    ("catalogue: c\nvariants: {}\n", "at least one variant"),
    ("catalogue: c\nvariants: {gan: a.ckpt}\nimages_per_varaint: 3\n", "unknown study file keys"),
    ("catalogue: c\nvariants: {gan: a.ckpt}\nquestions: {likeability: {prompt: x}}\n", "unknown question fields"),
    ("catalogue: c\nvariants: {control: a.ckpt}\n", "must be letters"),
    ("catalogue: c\nvariants: {'../x': a.ckpt}\n", "must be letters"),
    ("catalogue: c\nvariants: {gan: a.ckpt}\noriginal_threshold: 6\n", "original_threshold"),
    ("catalogue: c\nvariants: {gan: a.ckpt}\nimages_per_variant: 0\n", "images_per_variant"),
])
def test_mistakes_are_errors_not_silent_defaults(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_study_config(write(tmp_path, text))

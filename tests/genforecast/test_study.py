"""The study runner trains the classifier and the variants through the real CLI and writes the results table."""

from pathlib import Path

import pytest
from conftest import CONFIGS

from genforecast.study import main

TINY = ["--override=--data.init_args.batch_size=8", "--override=--trainer.max_steps=4",
        "--override=--trainer.max_epochs=1", "--override=--trainer.val_check_interval=2"]


def test_fashion_study_prints_results_table(fashion_catalogue: Path, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASHION_CATALOGUE", str(fashion_catalogue))
    monkeypatch.delenv("FASHION_CLASSIFIER", raising=False)
    assert main(["fashion", "--logger", "csv", "--configs", str(CONFIGS), *TINY,
                 "--override=--data.init_args.resolution=32"]) == 0
    out = capsys.readouterr().out
    for variant in ("gan", "can", "canh"):
        assert f"| {variant} |" in out
    assert (tmp_path / "outputs" / "fashion" / "results.md").is_file()
    assert (tmp_path / "outputs" / "fashion" / "classifier" / "classifier.pt").is_file()

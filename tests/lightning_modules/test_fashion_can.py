"""FashionCAN's objectives against the paper's formulas written out independently, its metrics and its guard."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules.fashion import FashionCatalogueDataModule
from lightning_modules.fashion_can import FashionCAN
from lightning_modules.guard import DivergenceError


def _batch(count: int = 6, resolution: int = 32) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    masks = (torch.rand(count, 1, resolution, resolution, generator=generator) > 0.5).to(torch.uint8)
    return {"image": torch.randint(0, 256, (count, 3, resolution, resolution), generator=generator, dtype=torch.uint8),
            "mask": masks, "shape": torch.randint(0, 7, (count,), generator=generator),
            "texture": torch.randint(0, 7, (count,), generator=generator)}


def _log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return -torch.log1p(torch.exp(-x))


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    log_probabilities = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -log_probabilities[torch.arange(len(labels)), labels].mean()


@pytest.fixture
def fixed_latent(monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    latent = torch.randn(6, 100, generator=torch.Generator().manual_seed(5))
    monkeypatch.setattr(FashionCAN, "sample_latent", lambda self, count, rng: latent[:count])
    return latent


@pytest.mark.parametrize("conditioning", ["none", "shape_mask"])
def test_discriminator_objective_matches_paper(conditioning: str, fixed_latent: torch.Tensor):
    torch.manual_seed(0)
    model = FashionCAN(resolution=32, base_channels=8, conditioning=conditioning, jitter_scale=0.0,
                       jitter_translate=0.0, lambda_d_real_fake=2.0, lambda_d_classif=0.5)
    batch = _batch()
    terms = model.discriminator_losses(batch, torch.Generator())
    real = batch["image"].float() / 127.5 - 1
    masks = batch["mask"].float() if conditioning == "shape_mask" else None
    with torch.no_grad():
        fake = model.generator(fixed_latent, masks) if masks is not None else model.generator(fixed_latent)
    real_out = model.discriminator(real, masks) if masks is not None else model.discriminator(real)
    fake_out = model.discriminator(fake, masks) if masks is not None else model.discriminator(fake)
    # L_D = l_Dr * (-mean log D(x) - mean log(1 - D(G(z)))) + l_Db * (CE_shape + CE_texture)
    real_fake = -_log_sigmoid(real_out.real_fake).mean() - _log_sigmoid(-fake_out.real_fake).mean()
    classif = (_cross_entropy(real_out.shape_logits, batch["shape"])
               + _cross_entropy(real_out.texture_logits, batch["texture"]))
    torch.testing.assert_close(terms["loss"], 2.0 * real_fake + 0.5 * classif)


@pytest.mark.parametrize(("creativity", "creativity_on", "form"), [
    ("none", "both", "non_saturating"), ("can", "shape", "saturating"), ("holistic", "texture", "non_saturating"),
    ("holistic", "both", "saturating")])
def test_generator_objective_matches_paper(creativity: str, creativity_on: str, form: str,
                                           fixed_latent: torch.Tensor):
    torch.manual_seed(0)
    model = FashionCAN(resolution=32, base_channels=8, creativity=creativity, creativity_on=creativity_on,
                       generator_loss_form=form, lambda_g_real_fake=1.5, lambda_g_creativity=0.25)
    terms = model.generator_losses(_batch(), torch.Generator())
    out = model.discriminator(model.generator(fixed_latent))
    if form == "saturating":  # min log(1 - D(G(z)))
        real_fake = _log_sigmoid(-out.real_fake).mean()
    else:  # min -log D(G(z))
        real_fake = -_log_sigmoid(out.real_fake).mean()
    heads = {"shape": [out.shape_logits], "texture": [out.texture_logits],
             "both": [out.shape_logits, out.texture_logits]}[creativity_on]
    k = 7
    creativity_value = torch.tensor(0.0)
    for logits in heads:
        if creativity == "can":  # -sum_k [1/K log s + (1 - 1/K) log(1 - s)]
            per_sample = -(_log_sigmoid(logits) / k + (1 - 1 / k) * _log_sigmoid(-logits)).sum(dim=1)
        else:  # -sum_k 1/K log softmax_k
            per_sample = -(torch.log_softmax(logits, dim=1) / k).sum(dim=1)
        creativity_value = creativity_value + per_sample.mean()
    expected = 1.5 * real_fake + (0.25 * creativity_value if creativity != "none" else 0.0)
    torch.testing.assert_close(terms["loss"], expected)


class NaNAfter(FashionCAN):
    """FashionCAN whose generator loss becomes NaN at one step."""

    def __init__(self, nan_at: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_at = nan_at

    def generator_losses(self, batch, rng):
        terms = super().generator_losses(batch, rng)
        if self.step_index == self.nan_at:
            terms["loss"] = terms["loss"] * math.nan
        return terms


def _fit(model: FashionCAN, root: Path, tmp_path: Path, max_steps: int) -> L.Trainer:
    datamodule = FashionCatalogueDataModule(str(root), resolution=32, batch_size=4, val_fraction=0.2)
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                        limit_val_batches=0, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=datamodule)
    return trainer


def test_divergence_stops_with_message_and_usable_checkpoint(fashion_catalogue: Path, tmp_path: Path):
    model = NaNAfter(nan_at=2, resolution=32, base_channels=8)
    with pytest.raises(DivergenceError, match=r"non-finite generator loss at global step 5") as error:
        _fit(model, fashion_catalogue, tmp_path, max_steps=10)
    checkpoint = Path(str(error.value).split("saved in ")[1].split(";")[0])
    assert checkpoint.is_file()
    restored = FashionCAN.load_from_checkpoint(checkpoint, weights_only=False)
    assert all(torch.isfinite(p).all() for p in restored.parameters())
    assert restored.step_index == 2


def test_skip_policy_drops_the_update_and_counts_it(fashion_catalogue: Path, tmp_path: Path):
    model = NaNAfter(nan_at=2, resolution=32, base_channels=8, nonfinite="skip")
    _fit(model, fashion_catalogue, tmp_path, max_steps=10)
    assert model.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("conditioning", ["none", "shape_mask"])
def test_validation_logs_paper_metrics_and_sample_grid(conditioning: str, fashion_catalogue: Path,
                                                       classifier_weights: Path, tmp_path: Path):
    model = FashionCAN(resolution=32, base_channels=8, conditioning=conditioning,
                       classifier_weights=str(classifier_weights), sample_grid_size=4)
    datamodule = FashionCatalogueDataModule(str(fashion_catalogue), resolution=32, batch_size=8, val_fraction=0.2)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=datamodule)
    metrics = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    for name in ("fid_classifier", "novelty", "shape_entropy", "texture_entropy", "shape_score", "texture_score",
                 "mean_intensity", "darkness", "skewness"):
        assert math.isfinite(metrics[f"val/{name}"]), name
    assert 0 <= metrics["val/shape_entropy"] <= math.log(7) + 1e-6
    assert list((tmp_path / "images").rglob("*.png"))


def test_inception_fid_needs_a_local_weights_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="inception.pt"):
        FashionCAN(resolution=32, base_channels=8, inception_weights=str(tmp_path / "inception.pt"))

"""FashionCAN: DesIGN's creative fashion GANs (Sbai, Elhoseiny, Bordes, LeCun, Couprie 2018).

One module covers the paper's variants, chosen by configuration:

* ``creativity``: ``none`` (GAN with an auxiliary classifier), ``can`` (Elgammal et al.'s independent
  sigmoids) or ``holistic`` (the paper's CAN(H)), applied to the ``shape`` head, the ``texture`` head or ``both``.
* ``conditioning``: ``none`` (DCGAN from noise) or ``shape_mask`` (the paper's mask + style-latent generator
  with a mask-aware discriminator; the masks come from the real garments of the batch).

Objectives (the paper's notation): ``L_D = l_Dr L_D,real/fake + l_Db L_D,classif`` and
``L_G = l_Gr L_G,real/fake + l_Ge L_G,creativity``, where ``L_D,classif`` is the cross-entropy of the shape and
texture heads on real images and the creativity term is summed over the selected heads.

Validation generates one image per real validation image (fixed seeds, the real image's mask when
conditioned) and logs, with a frozen :class:`ShapeTextureClassifier` loaded from ``classifier_weights``: FID in
the classifier's feature space, the novelty (mean distance to the nearest training image in that space), the
entropy and Inception-style score of the shape and texture predictions, and image statistics (mean intensity,
darkness, skewness), plus a grid of samples.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from datamodules.augment import scale_translate_jitter, to_unit_range
from datamodules.prediction import sample_names
from lightning_modules.adversarial import AdversarialModule, CompileMode, LossTerms
from lightning_modules.guard import NonFinitePolicy
from lightning_modules.visuals import image_grid, log_image
from losses import (
    auxiliary_classification_loss,
    can_loss,
    discriminator_real_fake_loss,
    generator_real_fake_loss,
    holistic_can_loss,
)
from losses.adversarial import GeneratorLossForm
from metrics.classifier_scores import ClassifierScores
from metrics.fid import FeatureFID, inception_fid
from metrics.image_stats import ImageStatistics
from metrics.novelty import NearestTrainingDistance
from networks.classifier import load_exported_classifier
from networks.conditional import MaskAwareDiscriminator, ShapeConditionedGenerator
from networks.dcgan import DCGANDiscriminator, DCGANGenerator

CREATIVITY_LOSSES = {"can": can_loss, "holistic": holistic_can_loss}


class FashionCAN(AdversarialModule):
    """Creative adversarial network for fashion images (see the module docstring for the variants).

    Args:
        resolution: image size in pixels (a power of two >= 32; 64 and 128 as in the paper's DCGAN runs).
        latent_dim: size of the noise (style) vector.
        base_channels: width of the first/last convolution blocks of both networks.
        conditioning: ``"none"`` or ``"shape_mask"``.
        creativity: ``"none"``, ``"can"`` or ``"holistic"``.
        creativity_on: which classification heads the creativity term acts on.
        generator_loss_form: ``"saturating"`` (as written in the paper) or ``"non_saturating"``.
        lambda_d_real_fake, lambda_d_classif, lambda_g_real_fake, lambda_g_creativity: the paper's weights.
        lr, betas: Adam settings of both networks (DCGAN's 2e-4, (0.5, 0.999)).
        discriminator_norm: ``"batch"``, ``"instance"`` or ``"none"``.
        jitter_scale, jitter_translate: the paper's random scale and translation augmentation of real images.
        classifier_weights: file exported by :class:`ShapeTextureClassifier`; without it the classifier-based
            metrics are not computed (image statistics and sample grids still are).
        inception_weights: local Inception-v3 FID weights file (torchmetrics' format); adds ``val/fid_inception``.
        sample_grid_size: number of fixed-noise samples in the logged grid.
        channels_last: keep both networks and their inputs in NHWC layout (faster convolutions on tensor cores).
        compile_mode: ``torch.compile`` mode of the training forwards (see :mod:`lightning_modules.adversarial`);
            ``None`` trains eagerly.
        cuda_graph: run the whole training step as one CUDA graph (see :mod:`lightning_modules.adversarial`).
    """

    def __init__(
        self,
        resolution: int = 64,
        latent_dim: int = 100,
        base_channels: int = 64,
        conditioning: Literal["none", "shape_mask"] = "none",
        creativity: Literal["none", "can", "holistic"] = "none",
        creativity_on: Literal["shape", "texture", "both"] = "both",
        generator_loss_form: GeneratorLossForm = "non_saturating",
        lambda_d_real_fake: float = 1.0,
        lambda_d_classif: float = 1.0,
        lambda_g_real_fake: float = 1.0,
        lambda_g_creativity: float = 1.0,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        discriminator_norm: Literal["batch", "instance", "none"] = "batch",
        num_shapes: int = 7,
        num_textures: int = 7,
        jitter_scale: float = 0.1,
        jitter_translate: float = 0.1,
        classifier_weights: str | None = None,
        inception_weights: str | None = None,
        sample_grid_size: int = 64,
        channels_last: bool = False,
        n_critic: int = 1,
        gradient_clip_val: float | None = None,
        nonfinite: NonFinitePolicy = "stop",
        seed: int = 0,
        compile_mode: CompileMode | None = None,
        cuda_graph: bool = False,
    ) -> None:
        super().__init__(n_critic=n_critic, gradient_clip_val=gradient_clip_val, nonfinite=nonfinite, seed=seed,
                         compile_mode=compile_mode, cuda_graph=cuda_graph)
        self.save_hyperparameters()
        self.conditional = conditioning == "shape_mask"
        if self.conditional:
            self.generator = ShapeConditionedGenerator(latent_dim, resolution, base_channels)
            self.discriminator = MaskAwareDiscriminator(resolution, base_channels, num_shapes, num_textures,
                                                        discriminator_norm)
        else:
            self.generator = DCGANGenerator(latent_dim, resolution, base_channels)
            self.discriminator = DCGANDiscriminator(resolution, base_channels, 3, num_shapes, num_textures,
                                                    discriminator_norm)
        if channels_last:
            self.generator.to(memory_format=torch.channels_last)
            self.discriminator.to(memory_format=torch.channels_last)
        self.creativity_heads = {"shape": ("shape",), "texture": ("texture",), "both": ("shape", "texture")}[
            creativity_on]
        self.classifier: nn.Module | None = None
        if classifier_weights is not None:
            self.classifier = load_exported_classifier(classifier_weights, num_shapes, num_textures)
            self.classifier.requires_grad_(False)
        self.fid = FeatureFID(num_features=512, reset_real_features=True)
        self.fid_inception = inception_fid(inception_weights) if inception_weights else None
        self.novelty = NearestTrainingDistance()
        self.shape_scores = ClassifierScores(num_shapes)
        self.texture_scores = ClassifierScores(num_textures)
        self.image_stats = ImageStatistics()

    def train(self, mode: bool = True) -> FashionCAN:
        """Switch the trained networks' mode; the frozen metric classifier always stays in eval mode."""
        super().train(mode)
        if self.classifier is not None:
            self.classifier.eval()
        return self

    # ---- networks -----------------------------------------------------------------------------------------

    def generate(self, latent: torch.Tensor, mask: torch.Tensor | None = None, *,
                 network: nn.Module | None = None) -> torch.Tensor:
        """Images in [-1, 1] from latent codes (and masks when conditioned)."""
        network = network if network is not None else self.generator
        return network(latent, mask) if self.conditional else network(latent)

    def discriminate(self, images: torch.Tensor, mask: torch.Tensor | None = None, *,
                     network: nn.Module | None = None) -> Any:
        network = network if network is not None else self.discriminator
        return network(images, mask) if self.conditional else network(images)

    def sample_latent(self, count: int, rng: torch.Generator) -> torch.Tensor:
        return torch.randn(count, self.hparams.latent_dim, generator=rng, device=self.device)

    def _real_batch(self, batch: dict[str, torch.Tensor], rng: torch.Generator | None) -> tuple[torch.Tensor, ...]:
        images = to_unit_range(batch["image"])
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        masks = batch["mask"].float() if self.conditional else None
        if rng is not None:
            images, masks = scale_translate_jitter(images, masks, self.hparams.jitter_scale,
                                                   self.hparams.jitter_translate, rng)
        return images, masks

    # ---- adversarial losses -------------------------------------------------------------------------------

    def discriminator_losses(self, batch: dict[str, torch.Tensor], rng: torch.Generator) -> LossTerms:
        hp = self.hparams
        real, masks = self._real_batch(batch, rng)
        with torch.no_grad():
            fake = self.generate(self.sample_latent(real.shape[0], rng), masks)
        discriminator = self.network("discriminator")
        real_out = self.discriminate(real, masks, network=discriminator)
        fake_out = self.discriminate(fake, masks, network=discriminator)
        real_fake = discriminator_real_fake_loss(real_out.real_fake, fake_out.real_fake)
        classif = (auxiliary_classification_loss(real_out.shape_logits, batch["shape"])
                   + auxiliary_classification_loss(real_out.texture_logits, batch["texture"]))
        loss = hp.lambda_d_real_fake * real_fake + hp.lambda_d_classif * classif
        return {"loss": loss, "real_fake": real_fake, "classif": classif}

    def generator_losses(self, batch: dict[str, torch.Tensor], rng: torch.Generator) -> LossTerms:
        hp = self.hparams
        masks = batch["mask"].float() if self.conditional else None
        fake = self.generate(self.sample_latent(batch["image"].shape[0], rng), masks,
                             network=self.network("generator"))
        out = self.discriminate(fake, masks)
        real_fake = generator_real_fake_loss(out.real_fake, hp.generator_loss_form)
        terms: LossTerms = {"real_fake": real_fake}
        loss = hp.lambda_g_real_fake * real_fake
        if hp.creativity != "none":
            creativity_loss = CREATIVITY_LOSSES[hp.creativity]
            creativity = sum(creativity_loss(getattr(out, f"{head}_logits")) for head in self.creativity_heads)
            terms["creativity"] = creativity
            loss = loss + hp.lambda_g_creativity * creativity
        terms["loss"] = loss
        return terms

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        hp = self.hparams
        return (torch.optim.Adam(self.generator.parameters(), lr=hp.lr, betas=tuple(hp.betas)),
                torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr, betas=tuple(hp.betas)))

    # ---- evaluation ---------------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        if self.classifier is not None and self.novelty.reference is None:
            self.novelty.set_reference(self._training_features())

    @torch.no_grad()
    def _training_features(self) -> torch.Tensor:
        dataset = self.trainer.datamodule.train_set
        chunks = torch.arange(len(dataset)).split(256)
        return torch.cat([self.classifier.features(to_unit_range(dataset[idx]["image"].to(self.device)))
                          for idx in chunks])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        real, masks = self._real_batch(batch, rng=None)
        rng = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + batch_idx * 7919
                                                               + self.global_rank)
        fake = self.generate(self.sample_latent(real.shape[0], rng), masks)
        self.image_stats.update(fake)
        if self.fid_inception is not None:
            self.fid_inception.update((real + 1) / 2, real=True)
            self.fid_inception.update(((fake + 1) / 2).clamp(0, 1), real=False)
        if self.classifier is None:
            return
        real_features = self.classifier.features(real)
        fake_features = self.classifier.features(fake)
        shape_logits = self.classifier.shape_head(fake_features)
        texture_logits = self.classifier.texture_head(fake_features)
        self.fid.update(real_features, real=True)
        self.fid.update(fake_features, real=False)
        self.novelty.update(fake_features)
        self.shape_scores.update(shape_logits)
        self.texture_scores.update(texture_logits)

    def on_validation_epoch_end(self) -> None:
        metrics = {f"val/{name}": value for name, value in self.image_stats.compute().items()}
        self.image_stats.reset()
        if self.fid_inception is not None:
            metrics["val/fid_inception"] = self.fid_inception.compute()
            self.fid_inception.reset()
        if self.classifier is not None:
            metrics["val/fid_classifier"] = self.fid.compute()
            metrics["val/novelty"] = self.novelty.compute()
            for head, scores in (("shape", self.shape_scores), ("texture", self.texture_scores)):
                for name, value in scores.compute().items():
                    metrics[f"val/{head}_{name}"] = value
                scores.reset()
            self.fid.reset()
            self.novelty.reset()
        self.log_dict(metrics, sync_dist=False)
        self._log_sample_grid()

    def _log_sample_grid(self) -> None:
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        count = self.hparams.sample_grid_size
        rng = torch.Generator(device=self.device).manual_seed(self.seed)
        masks = None
        if self.conditional:
            val_set = self.trainer.datamodule.val_set
            index = torch.arange(count) % len(val_set)
            masks = val_set[index]["mask"].to(self.device).float()
        samples = self.generate(self.sample_latent(count, rng), masks)
        log_image(self.trainer, f"samples/{self.hparams.creativity}", image_grid(samples),
                  caption=f"step {self.global_step}")

    # ---- prediction ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Generated samples of a predict batch (:meth:`datamodules.FashionCatalogueDataModule.predict_dataloader`).

        Sample ``i`` (``batch["index"]``) comes from a latent drawn by a generator seeded with ``(seed, i)``: it does
        not depend on the batch size, the rank or the order (only on the device type, whose generators differ). A
        shape-conditioned model paints it into ``batch["mask"]``, the mask of a real garment.

        Returns ``{"name": list[str] (B), "variant": str, the creativity variant (as the logged sample grids:
        "none", "can", "holistic"), "samples": float32 (B, 3, R, R) in [-1, 1], and for shape-conditioned models
        "masks": float32 (B, 1, R, R) in {0, 1}}``, tensors on the CPU.
        """
        _real, masks = self._real_batch(batch, rng=None)
        latent = torch.cat([self.sample_latent(1, self.seeded_generator(self.seed, int(index)))
                            for index in batch["index"]])
        outputs = {"name": sample_names(batch), "variant": self.hparams.creativity,
                   "samples": self.generate(latent, masks).float().cpu()}
        if masks is not None:
            outputs["masks"] = masks.cpu()
        return outputs

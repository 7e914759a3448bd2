"""One LightningModule per paper model, plus the shared adversarial training step."""

from lightning_modules.fashion_can import FashionCAN
from lightning_modules.shape_texture_classifier import ShapeTextureClassifier

__all__ = ["FashionCAN", "ShapeTextureClassifier"]

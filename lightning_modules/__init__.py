"""One LightningModule per paper model, plus the shared adversarial training step."""

from lightning_modules.f2f_forecaster import F2FForecaster
from lightning_modules.fashion_can import FashionCAN
from lightning_modules.frame_gan import FrameGAN
from lightning_modules.joint_forecaster import JointForecaster
from lightning_modules.mask_rcnn_finetune import MaskRCNNFinetune
from lightning_modules.seg_forecast import SegForecastAR
from lightning_modules.semantic_segmenter import SemanticSegmenter
from lightning_modules.shape_texture_classifier import ShapeTextureClassifier

__all__ = ["F2FForecaster", "FashionCAN", "FrameGAN", "JointForecaster", "MaskRCNNFinetune", "SegForecastAR", "SemanticSegmenter",
           "ShapeTextureClassifier"]

"""DataModules that read the real datasets' on-disk layouts (and the procedural demo sets written in them)."""

from datamodules.cityscapes import CityscapesSequenceDataModule
from datamodules.distance_map_planes import DistanceMapDataModule
from datamodules.fashion import FashionCatalogueDataModule
from datamodules.fpn_features import FPNFeatureDataModule
from datamodules.segmentation_scores import SegmentationScoreDataModule
from datamodules.ucf101 import UCF101DataModule, VideoFolderDataModule

__all__ = [
    "CityscapesSequenceDataModule",
    "DistanceMapDataModule",
    "FashionCatalogueDataModule",
    "FPNFeatureDataModule",
    "SegmentationScoreDataModule",
    "UCF101DataModule",
    "VideoFolderDataModule",
]

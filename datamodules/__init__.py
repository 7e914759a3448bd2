"""DataModules that read the real datasets' on-disk layouts (and the procedural demo sets written in them)."""

from datamodules.fashion import FashionCatalogueDataModule

__all__ = ["FashionCatalogueDataModule"]

"""Child script of test_ddp_adversarial: two CPU ranks train FashionCAN, each saves its weights.

Lightning's subprocess launcher re-runs this script once per extra rank, as it does for a user's script.
Usage: python ddp_adversarial_child.py <catalogue root> <output dir>
"""

import sys
from pathlib import Path

import lightning as L
import torch
from torch.nn.parallel import DistributedDataParallel

from datamodules.fashion import FashionCatalogueDataModule
from genforecast.strategies import SeparateNetworksDDPStrategy
from lightning_modules.fashion_can import FashionCAN


class SaveRankWeights(L.Callback):
    def __init__(self, output: Path) -> None:
        self.output = output
        self.wrapped_separately = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.wrapped_separately = (trainer.strategy.model is pl_module
                                   and isinstance(pl_module.network("generator"), DistributedDataParallel)
                                   and isinstance(pl_module.network("discriminator"), DistributedDataParallel))

    def on_train_end(self, trainer, pl_module):
        state = {name: tensor.detach().clone() for name, tensor in pl_module.named_parameters()}
        torch.save({"parameters": state, "wrapped_separately": self.wrapped_separately,
                    "step_index": pl_module.step_index},
                   self.output / f"rank{trainer.global_rank}.pt")


def main() -> None:
    root, output = sys.argv[1], Path(sys.argv[2])
    L.seed_everything(0)
    datamodule = FashionCatalogueDataModule(root, resolution=32, batch_size=4, val_fraction=0.2)
    model = FashionCAN(resolution=32, base_channels=8, creativity="holistic")
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=SeparateNetworksDDPStrategy(), max_steps=6,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
                        enable_model_summary=False, callbacks=[SaveRankWeights(output)])
    trainer.fit(model, datamodule=datamodule)


if __name__ == "__main__":
    main()

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torchvision.models import mobilenet_v3_large

from datamodules.cityscapes import CityscapesSequenceDataModule
from lightning_modules.semantic_segmenter import SemanticSegmenter
from networks.segmenter import SegmentationNetwork, export_segmenter, load_exported_segmenter

LIGHT = "lraspp_mobilenet_v3_large"


@pytest.mark.parametrize("architecture", [LIGHT, "deeplabv3_mobilenet_v3_large"])
def test_forward_gives_class_logits_at_input_resolution(architecture: str):
    torch.manual_seed(0)
    network = SegmentationNetwork(architecture).eval()
    with torch.no_grad():
        logits = network(torch.rand(2, 3, 32, 64) * 2 - 1)
    assert logits.shape == (2, 19, 32, 64) and logits.dtype == torch.float32
    with pytest.raises(ValueError, match="unknown segmenter architecture 'unet'"):
        SegmentationNetwork("unet")


def test_backbone_weights_come_from_a_local_imagenet_file(tmp_path: Path):
    torch.manual_seed(0)
    imagenet = mobilenet_v3_large(weights=None).state_dict()
    torch.save(imagenet, tmp_path / "mobilenet_v3_large.pth")
    module = SemanticSegmenter(LIGHT, backbone_weights=str(tmp_path / "mobilenet_v3_large.pth"))
    assert torch.equal(module.network.model.backbone.state_dict()["3.block.0.0.weight"],
                       imagenet["features.3.block.0.0.weight"])
    del imagenet["features.0.0.weight"]
    torch.save(imagenet, tmp_path / "incomplete.pth")
    with pytest.raises(ValueError, match=r"incomplete\.pth does not match .* missing 0\.0\.weight"):
        SemanticSegmenter(LIGHT, backbone_weights=str(tmp_path / "incomplete.pth"))


def test_export_load_round_trip_and_mismatches(tmp_path: Path):
    torch.manual_seed(0)
    network = SegmentationNetwork(LIGHT).eval()
    path = export_segmenter(network, tmp_path / "exported" / "segmenter.pt")
    loaded = load_exported_segmenter(path, architecture=LIGHT)
    assert not loaded.training and loaded.architecture == LIGHT
    images = torch.rand(1, 3, 32, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(images), network(images))
    assert not list(tmp_path.glob("exported/*.tmp"))

    with pytest.raises(ValueError, match=f"{path} holds a {LIGHT} segmenter, not the expected fcn_resnet50"):
        load_exported_segmenter(path, architecture="fcn_resnet50")
    with pytest.raises(ValueError, match=f"{path} holds a {LIGHT} segmenter, not the expected "
                                         "deeplabv3_mobilenet_v3_large"):
        SemanticSegmenter("deeplabv3_mobilenet_v3_large", weights=str(path))
    fine_tuned = SemanticSegmenter(LIGHT, weights=str(path)).eval()
    with torch.no_grad():
        assert torch.equal(fine_tuned(images), network(images))

    torch.save({"format": "genforecast.shape_texture_classifier/1"}, tmp_path / "classifier.pt")
    with pytest.raises(ValueError, match="classifier.pt is not a genforecast semantic segmenter file"):
        load_exported_segmenter(tmp_path / "classifier.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pt is not a readable genforecast semantic segmenter file"):
        load_exported_segmenter(tmp_path / "garbage.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt not found: train it first"):
        load_exported_segmenter(tmp_path / "missing.pt")


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_training_on_every_labelled_frame_reduces_the_loss_and_exports(cityscapes_demo: Path, tmp_path: Path):
    datamodule = CityscapesSequenceDataModule(str(cityscapes_demo), horizon="mid", resolution=(64, 128),
                                              crop_size=64, batch_size=1, val_batch_size=2, load_instances=False,
                                              load_all_frame_labels=True, cache_dir=str(tmp_path / "cache"))
    export_path = tmp_path / "segmenter.pt"
    L.seed_everything(0)
    module = SemanticSegmenter(LIGHT, lr=3e-3, export_path=str(export_path))
    recorder = LossRecorder()
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=1, check_val_every_n_epoch=2, callbacks=[recorder],
                        default_root_dir=tmp_path)
    trainer.fit(module, datamodule=datamodule)

    assert len(recorder.losses) == 6
    assert sum(recorder.losses[-3:]) < 0.8 * sum(recorder.losses[:3])
    assert {"val/loss", "val/miou", "val/mo_miou"} <= trainer.callback_metrics.keys()
    assert list(tmp_path.glob("images/val_input|prediction|ground_truth/step_*.png"))
    exported = load_exported_segmenter(export_path, architecture=LIGHT)
    images = torch.rand(1, 3, 64, 128) * 2 - 1
    with torch.no_grad():
        assert torch.equal(exported(images), module.network.eval()(images))

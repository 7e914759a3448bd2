"""The prediction writer: what ``genforecast predict`` leaves on disk for every model of the suite.

:class:`PredictionWriter` writes each predict batch as soon as the model returns it (every rank its own samples;
file names come from the samples' names, unique in the predict set, so ranks never collide), dispatching on what
the model's ``predict_step`` returned:

* **generated samples** (``FashionCAN``: ``"samples"``): ``samples/<variant>/<name>.png``, one per sample, and
  ``samples/<variant>/grid_<first name>.png``, a grid of the batch;
* **predicted frames** (``FrameGAN``: ``"predicted"``): ``frames/<name>.png``, a strip of the input frames, the
  predicted frames and the real frames that follow the inputs when the data has them, left to right without
  padding; ``frames/<name>.mp4``, the inputs then the predictions as a video (PyAV);
* **segmentations** (``SegForecastAR``, ``JointForecaster``, ``SemanticSegmenter``: ``"segmentation"`` or
  ``"semantic"``): ``segmentation/step<k>/<target>_trainIds.png`` (uint8 Cityscapes trainIds) and
  ``<target>_color.png`` (the Cityscapes colours);
* **instances** (``F2FForecaster``, ``JointForecaster``, ``MaskRCNNFinetune``: ``"instances"`` or ``"masks"``): the
  Cityscapes instance results format read by ``cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling``:
  ``instances/step<k>/<target>_pred.txt`` with one line ``masks/<target>_<i:03d>.png <label id> <score>`` per
  instance, and the binary masks (0 / 255) ``instances/step<k>/masks/<target>_<i:03d>.png``.

``k`` is the future step of a forecast (0: the observed frame, for the segmenter and the detector) and ``<target>``
the name of the frame it forecasts (``<city>_<seq>_<frame>`` for Cityscapes data, see :mod:`datamodules.prediction`).
One step's folder holds one prediction per frame, so it is what the Cityscapes evaluators are pointed at
(``CITYSCAPES_RESULTS=<output_dir>/instances/step3``), whereas a folder of frames predicted with sliding windows has
a frame forecast at several steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from torchvision.utils import save_image

from lightning_modules.visuals import encode_video, image_grid
from metrics.cityscapes_labels import colorize


def unit_range_to_uint8(images: torch.Tensor) -> np.ndarray:
    """uint8 pixels (..., H, W, 3) of images (..., 3, H, W) in [-1, 1]."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).movedim(-3, -1).numpy()


class PredictionWriter(BasePredictionWriter):
    """Writes every predict batch under ``output_dir`` (layout: the module docstring).

    ``trainer.predict(..., return_predictions=False)`` keeps a long prediction run from holding every output in
    memory: the files are the result.
    """

    def __init__(self, output_dir: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        if isinstance(prediction, list):  # JointForecaster: one record per sample, the target frame only
            for record in prediction:
                self.write_segmentation(record["step"], record["name"], record["semantic"])
                self.write_instances(record["step"], record["name"], record)
        elif "samples" in prediction:
            self.write_samples(prediction)
        elif "predicted" in prediction:
            self.write_clips(prediction)
        elif "segmentation" in prediction or "instances" in prediction:
            for sample, names in enumerate(prediction["target_names"]):
                for position, (step, name) in enumerate(zip(prediction["steps"], names)):
                    if "segmentation" in prediction:
                        self.write_segmentation(step, name, prediction["segmentation"][sample, position])
                    if "instances" in prediction:
                        self.write_instances(step, name, prediction["instances"][sample][position])
        else:
            raise ValueError(f"{type(pl_module).__name__}.predict_step returned {sorted(prediction)}: no samples, "
                             "predicted frames, segmentation or instances for the prediction writer")

    def _folder(self, *parts: str) -> Path:
        folder = self.output_dir.joinpath(*parts)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def write_samples(self, prediction: dict[str, Any]) -> None:
        """Generated images: one PNG each and a grid of the batch."""
        folder = self._folder("samples", prediction["variant"])
        samples = prediction["samples"]
        for name, pixels in zip(prediction["name"], unit_range_to_uint8(samples)):
            Image.fromarray(pixels).save(folder / f"{name}.png")
        save_image(image_grid(samples, nrow=math.ceil(math.sqrt(len(samples)))),
                   folder / f"grid_{prediction['name'][0]}.png")

    def write_clips(self, prediction: dict[str, Any]) -> None:
        """Predicted frames: a strip (inputs | predictions | real future frames) and a video (inputs, predictions)."""
        folder = self._folder("frames")
        for name, inputs, predicted, targets in zip(prediction["name"], prediction["inputs"], prediction["predicted"],
                                                    prediction["targets"]):
            strip = torch.cat(list(torch.cat([inputs, predicted, targets])), dim=-1)
            Image.fromarray(unit_range_to_uint8(strip)).save(folder / f"{name}.png")
            encode_video(torch.cat([inputs, predicted]), folder / f"{name}.mp4")

    def write_segmentation(self, step: int, name: str, train_ids: torch.Tensor) -> None:
        """A trainId map (h, w) as a trainId PNG and a Cityscapes colour PNG."""
        folder = self._folder("segmentation", f"step{step}")
        Image.fromarray(train_ids.to(torch.uint8).numpy()).save(folder / f"{name}_trainIds.png")
        Image.fromarray(colorize(train_ids).movedim(0, -1).numpy()).save(folder / f"{name}_color.png")

    def write_instances(self, step: int, name: str, instances: dict[str, torch.Tensor]) -> None:
        """One frame's instances (``masks`` (N, h, w), ``labels`` label ids, ``scores``) in the Cityscapes format."""
        folder = self._folder("instances", f"step{step}")
        masks_folder = self._folder("instances", f"step{step}", "masks")
        lines = []
        for index, (mask, label_id, score) in enumerate(zip(instances["masks"], instances["labels"].tolist(),
                                                            instances["scores"].tolist())):
            mask_name = f"{name}_{index:03d}.png"
            Image.fromarray(mask.numpy().astype(np.uint8) * 255).save(masks_folder / mask_name)
            lines.append(f"{masks_folder.name}/{mask_name} {label_id} {score!r}\n")
        (folder / f"{name}_pred.txt").write_text("".join(lines))

"""Tiny-shape overrides and test-data environments for running every experiment config on the CPU."""

from __future__ import annotations

import yaml
from conftest import CONFIGS

from genforecast.config_files import environment_variables

PRESETS = [f"--config={CONFIGS / 'trainer' / 'cpu.yaml'}", f"--config={CONFIGS / 'logger' / 'csv.yaml'}"]
EXPERIMENTS = sorted(path for path in CONFIGS.glob("*/*.yaml") if "experiment" in yaml.safe_load(path.read_text()))
CITYSCAPES_TINY = ["--data.init_args.resolution=[64, 128]", "--data.init_args.batch_size=2",
                   "--data.init_args.val_batch_size=2"]

TINY = {
    "lightning_modules.FashionCAN": ["--data.init_args.resolution=32", "--data.init_args.batch_size=4",
                                     "--model.init_args.base_channels=8", "--model.init_args.sample_grid_size=4"],
    "lightning_modules.ShapeTextureClassifier": ["--data.init_args.resolution=32", "--data.init_args.batch_size=4"],
    "lightning_modules.FrameGAN": ["--model.init_args.width_multiplier=0.0625", "--data.init_args.batch_size=2",
                                   "--data.init_args.frame_size=[64, 80]", "--data.init_args.eval_stride=1",
                                   "--data.init_args.val_batch_size=1", "--model.init_args.log_clips=1"],
    "lightning_modules.SemanticSegmenter": ["--model.init_args.architecture=lraspp_mobilenet_v3_large",
                                            "--data.init_args.resolution=[64, 128]", "--data.init_args.crop_size=64",
                                            "--data.init_args.batch_size=2", "--data.init_args.val_batch_size=2"],
    "lightning_modules.MaskRCNNFinetune": ["--model.init_args.backbone=resnet18", "--model.init_args.min_size=64",
                                           "--model.init_args.max_size=128", "--model.init_args.box_head_size=64",
                                           "--model.init_args.mask_head_channels=16",
                                           "--model.init_args.anchor_sizes=[4, 8, 16, 32, 64]",
                                           "--data.init_args.resolution=[64, 128]", "--data.init_args.batch_size=2",
                                           "--data.init_args.val_batch_size=2"],
    "lightning_modules.SegForecastAR": [*CITYSCAPES_TINY, "--data.init_args.crop_size=32",
                                        "--model.init_args.width_multiplier=0.125", "--model.init_args.init_weights=null",
                                        "--model.init_args.log_sequences=1"],
    "lightning_modules.JointForecaster": [*CITYSCAPES_TINY, "--data.init_args.crop_size=32",
                                          "--model.init_args.width_multiplier=0.125",
                                          "--model.init_args.init_weights=null", "--model.init_args.log_sequences=1",
                                          "--data.init_args.max_sequences=2"],
    "lightning_modules.F2FForecaster": [*CITYSCAPES_TINY, "--model.init_args.width_multiplier=0.03125",
                                        "--model.init_args.init_weights=null",
                                        "--model.init_args.initialise_levels_from=null",
                                        "--model.init_args.max_detections=5"],
}

TEST_DATA = {"FASHION_CATALOGUE": "fashion_catalogue", "FASHION_CLASSIFIER": "classifier_weights",
             "UCF101_ROOT": "ucf101_demo", "CITYSCAPES_DATASET": "cityscapes_demo",
             "CITYSCAPES_SEGMENTER": "segmenter_weights", "F2F_DETECTOR": "detector_weights"}
"""The fixture (tests/conftest.py) each data or exported-model variable of the configs is pointed at in the tests."""

FAMILY_ENVIRONMENT = {
    family: {variable: TEST_DATA[variable] for config in EXPERIMENTS if config.parent.name == family
             for variable in environment_variables(config) if variable in TEST_DATA}
    for family in sorted({config.parent.name for config in EXPERIMENTS})}
"""Per family, the variables its configs read that point them at the tiny test datasets (fixture names as values)."""

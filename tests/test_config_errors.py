"""The training configs' errors: a Python caller reads the field's name, dm-train the option's, from one error
(ConfigValueError) and one field -> option map (training.cli.option_of). Torch-free and fast."""
from __future__ import annotations

import dataclasses

import pytest

from training.augment import AugmentConfig
from training.camera_effects import CameraEffects, parse_jpeg_quality
from training.cli import option_of, train_command
from training.config_errors import ConfigValueError
from training.loss_config import LossConfig
from training.model_config import ModelConfig

DM_TRAIN_OPTIONS = {name for param in train_command.params for name in getattr(param, "opts", ())}
# fields dm-train does not set (the library's own knobs)
LIBRARY_ONLY = {"dice_smooth", "ssim_window", "hflip", "brightness", "contrast", "saturation"}


@pytest.mark.parametrize("config", [ModelConfig, LossConfig, AugmentConfig, CameraEffects])
def test_every_field_dm_train_sets_names_a_real_option(config):
    for field in dataclasses.fields(config):
        if field.name not in LIBRARY_ONLY:
            assert option_of(field.name) in DM_TRAIN_OPTIONS, field.name


@pytest.mark.parametrize("make, library, command_line", [
    (lambda: ModelConfig(width=0), "width must be a positive number up to 16, got 0",
     "--width: must be a positive number up to 16, got 0"),
    (lambda: ModelConfig(shared_encoder=True, mask_width=0.5), "mask_width needs separate networks",
     "--mask-width: needs separate networks; with --shared-encoder both tasks use --width"),
    (lambda: ModelConfig(depth_arch="unet-small", mask_arch="autoencoder", shared_encoder=True),
     "shared_encoder=True needs depth_arch == mask_arch",
     "--shared-encoder: needs the same --depth-arch and --mask-arch (one encoder, two heads), got unet-small and "
     "autoencoder"),
    (lambda: ModelConfig.for_new_run(encoder_weights="/nowhere/r18.pt"), "encoder_weights: /nowhere/r18.pt does not",
     "--encoder-weights: /nowhere/r18.pt does not exist"),
    (lambda: LossConfig(w_bce=-1.0), "w_bce must be a finite number >= 0", "--w-bce: must be a finite number >= 0, "
                                                                            "got -1.0"),
    (lambda: AugmentConfig(min_scale=1.5), "min_scale must be in (0, 1]", "--augment-scale: must be in (0, 1], got 1.5"),
    (lambda: CameraEffects(blur_sigma=9.0), "blur_sigma: expected a sigma", "--blur: expected a sigma in [0, 5] "
                                                                            "pixels, got 9.0"),
    (lambda: parse_jpeg_quality("abc"), "jpeg_quality: expected a quality",
     "--jpeg-roundtrip: expected a quality such as 90 or a range such as 60-95, got 'abc'"),
])
def test_one_error_two_wordings(make, library, command_line):
    with pytest.raises(ConfigValueError) as info:
        make()
    assert isinstance(info.value, ValueError) and str(info.value).startswith(library)
    assert info.value.worded(option_of) == command_line


def test_a_saved_config_is_not_checked_for_its_encoder_weights():
    """A checkpoint's configuration names weights that were loaded when its run started (perhaps elsewhere)."""
    assert ModelConfig(encoder_weights="/nowhere/r18.pt").encoder_weights == "/nowhere/r18.pt"

"""Image modality: [B, C, H, W] tensors, the built-in `digits` dataset, PNG grids."""

from __future__ import annotations

from pathlib import Path

from cm_media.modality import Modality

from .codec import ImageCodec, ImageCodecConfig
from .datasets import ImageDataConfig, build_dataset
from .io import save_images
from .masks import image_mask
from .presets import PRESETS


class ImageModality(Modality):
    name = "image"
    DataConfig = ImageDataConfig
    CodecConfig = ImageCodecConfig
    backbone_presets = PRESETS
    default_suffix = ".png"
    generate_options = [("--separate", {"action": "store_true", "help": "image/video: one file per sample (in a folder named after --out) instead of a grid"})]

    def build_codec(self, cfg):
        return ImageCodec(cfg.codec)

    def build_dataset(self, cfg, codec, split="train"):
        return build_dataset(cfg, codec, split)

    def sample_shape(self, cfg, codec, **options):
        return (codec.channels, cfg.codec.size, cfg.codec.size)

    def save(self, media, path, cfg, separate=False, **options):
        if separate:
            return save_images(media, Path(path).with_suffix(""), grid=False)
        return save_images(media, Path(path) if Path(path).suffix else Path(path).with_suffix(".png"), grid=True)

    def read(self, path, cfg, codec):
        return codec.read(Path(path))[None]  # [1, C, H, W]

    def edit_mask(self, spec, model_shape, cfg):
        return image_mask(spec, model_shape[-2], model_shape[-1])

    def pretrained_dir(self):
        return Path(__file__).parent / "pretrained"


MODALITY = ImageModality()

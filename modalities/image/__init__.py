"""Image modality: [B, C, H, W] tensors, the built-in `digits` dataset, PNG grids."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from cm_media.modality import DemoRequest, Modality, html_image

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
    generate_options: ClassVar[list] = [
        ("--separate", {"action": "store_true",
                        "help": "image/video: one file per sample (in a folder named after --out) instead of a grid"}),
    ]

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

    # cm-media demo: a grid of 64 digits, after the audio and video sections
    demo_order = 30
    demo_bench_sizes: ClassVar[dict] = {"batch": 64, "num_samples": 128, "max_references": 180}

    def demo_request(self, cfg):
        return DemoRequest(64, "images.png")

    def demo_describe(self, cfg, media, n, steps):
        shape = "x".join(str(s) for s in media.shape[1:])
        return f"a grid of {n} images ({shape}), {steps} step(s)"

    def report_markdown(self, rel, extra=False):
        return f"![generated images]({rel})"

    def report_html(self, rel, extra=False):
        return f"<figure>{html_image(rel, 'generated images', width=512)}</figure>"


MODALITY = ImageModality()

"""Image modality: [B, C, H, W] tensors, the built-in `digits` and Debian's `fashion_mnist` datasets, PNG grids."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from cm_media import checks
from cm_media.errors import UserError
from cm_media.modality import DemoRequest, Modality, html_image

from .codec import ImageCodec, ImageCodecConfig
from .datasets import ImageDataConfig, build_dataset
from .io import ImageWriter
from .masks import image_mask
from .presets import PRESETS


class ImageModality(Modality):
    name = "image"
    DataConfig = ImageDataConfig
    CodecConfig = ImageCodecConfig
    backbone_presets = PRESETS
    default_suffix = ".png"
    # `cm-media generate fashion-mnist --class sneaker -n 16 --steps 1` (configs/image/fashion_mnist_ict.yaml)
    extra_bundled: ClassVar[dict] = {"fashion-mnist": "pretrained_fashion_mnist"}
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
        with self.open_writer(path, cfg, media.shape[0], separate=separate) as writer:
            writer.add(media)
            return writer.close()

    def open_writer(self, path, cfg, total, separate=False, **options):
        """A grid PNG (streamed row by row; no suffix: .png), another image format's grid, or with `separate`
        numbered PNGs in a folder named after `path`."""
        path = Path(path)
        if path.is_dir() and not separate:
            raise UserError(f"--out {path} is an existing folder; name a grid file inside it (e.g. "
                            f"{path / 'images.png'}) or pass --separate for one file per image")
        if separate:
            return ImageWriter(path.with_suffix(""), total, False, (cfg.codec.size,) * 2, cfg.codec.channels)
        return ImageWriter(path if path.suffix else path.with_suffix(".png"), total, True, (cfg.codec.size,) * 2,
                           cfg.codec.channels)

    def validate_config(self, cfg):
        checks.number(cfg.data.holdout, "data.holdout", 0, 1, hi_open=True)
        checks.integer(cfg.data.limit, "data.limit", 0, 10**9)
        checks.integer(cfg.codec.size, "codec.size", 1, 4096)
        if cfg.codec.channels not in (1, 3):
            raise UserError(f"codec.channels must be 1 or 3, got {cfg.codec.channels}")

    def read(self, path, cfg, codec):
        return codec.read(Path(path))[None]  # [1, C, H, W]

    def edit_mask(self, spec, model_shape, cfg):
        return image_mask(spec, model_shape[-2], model_shape[-1])

    # cm-media demo: a grid of 64 digits, after the audio and video sections; then, where it is installed, the
    # bundled fashion-mnist model's grid with a class per row
    demo_order = 30
    # method_comparison.py at equal training CPU seconds (benchmarks/README.md, "One-step methods"): from data, iCT
    # wins digits (1-step FD 0.868; sCT 0.875, MeanFlow 1.075) and fashion_mnist (net FD 101.7; sCT 139.9, MeanFlow
    # 154.1); from a teacher, CMT wins digits (0.745; CD 0.984, ECT 1.175, sCD 1.543) and ties CD on fashion_mnist
    default_methods: ClassVar[dict[str, str]] = {"from_data": "ict", "from_teacher": "cmt"}
    demo_bench_sizes: ClassVar[dict] = {"batch": 64, "num_samples": 128, "max_references": 180}
    demo_per_class = 10  # a square grid of 10 classes x 10 samples: a class per row

    def demo_models(self):
        return [self.name, *self.extra_bundled]

    def demo_request(self, cfg):
        classes = _class_condition(cfg)
        if cfg.data.dataset != "fashion_mnist" or not classes or len(classes) != self.demo_per_class:
            return DemoRequest(64, "images.png")
        request = {"class": [c for c in classes for _ in range(self.demo_per_class)]}
        return DemoRequest(len(request["class"]), "fashion_mnist.png", generate={"cond": request})

    def demo_describe(self, cfg, media, n, steps):
        shape = "x".join(str(s) for s in media.shape[1:])
        classes = _class_condition(cfg)
        rows = f", a class per row: {', '.join(classes)}" if cfg.data.dataset == "fashion_mnist" and classes else ""
        return f"a grid of {n} images ({shape}){rows}, {steps} step(s)"

    def report_markdown(self, rel, extra=False):
        return f"![generated images]({rel})"

    def report_html(self, rel, extra=False):
        return f"<figure>{html_image(rel, 'generated images', width=512)}</figure>"


def _class_condition(cfg) -> list[str]:
    """The class names of a model's `class` condition (from its backbone config), or []."""
    for c in cfg.backbone.get("cond") or []:
        if c.get("name") == "class" and c.get("kind", "class") == "class":
            return [str(v) for v in c.get("classes") or []]
    return []


MODALITY = ImageModality()

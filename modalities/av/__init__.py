"""Sounding-video modality `av`: a grey clip and its mono soundtrack generated together by one network.

Model tensors are flat [B, 1, D] (codec.py: pixels and the soundtrack's compressed STFT side by side), decoded
media is flat [B, T*H*W + N]; files are mp4 with H.264 video and AAC audio (io.py). The built-in data set is
`sounding_digits` (a digit that plays its note at every wall hit); the bundled model is `sounding-digits`.
`cm-media edit sounding-digits --input clip.mp4 --mask audio` gives a silent clip its sound, `--mask video`
makes motion for a soundtrack.
"""

from __future__ import annotations

import html
from pathlib import Path, PurePosixPath
from typing import ClassVar

import torch

from cm_media import checks
from cm_media.errors import UserError
from cm_media.modality import DemoRequest, Modality

from . import joint_net  # noqa: F401  registers backbone.arch "av_joint"
from .codec import AVCodecConfig, build_codec, layout_of, pack_media, split_media
from .datasets import AVDataConfig, build_dataset
from .presets import PRESETS

STREAMS = ("audio", "video")  # what `cm-media edit --mask` may regenerate


def html_sounding_video(rel: str, width: int = 256) -> str:
    """An inline video player with sound (not muted, unlike the silent video modality's), captioned."""
    src, name = html.escape(rel, quote=True), html.escape(PurePosixPath(rel).name)
    return (f'<figure><video controls playsinline preload="auto" width="{width}" src="{src}"></video>'
            f"<figcaption>{name}</figcaption></figure>")


class AVModality(Modality):
    name = "av"
    DataConfig = AVDataConfig
    CodecConfig = AVCodecConfig
    backbone_presets = PRESETS
    default_suffix = ".mp4"
    rate_columns: ClassVar[dict] = {"clips_per_s": "clips/s", "real_time_factor": "RTF"}
    demo_order = 40  # the last section, after audio, video and images
    # not compared on sounding video itself: the winners of both of its streams (iCT from data, CMT from a teacher
    # on tones and on moving digits, benchmarks/README.md "One-step methods")
    default_methods: ClassVar[dict[str, str]] = {"from_data": "ict", "from_teacher": "cmt"}
    extra_bundled: ClassVar[dict] = {"sounding-digits": "pretrained_sounding_digits"}
    demo_digits: ClassVar[list] = ["3", "7", "1", "5"]

    def pretrained_dir(self):
        return None  # no model named like the modality; `sounding-digits` is in extra_bundled

    def build_codec(self, cfg):
        return build_codec(cfg.codec)

    def build_dataset(self, cfg, codec, split="train"):
        return build_dataset(cfg, codec, split)

    def sample_shape(self, cfg, codec, **options):
        return (1, codec.layout.numel)

    def save(self, media, path, cfg, **options):
        """Write flat media [B, D] as mp4 files with sound (one file, or numbered files / a folder for B > 1)."""
        with self.open_writer(path, cfg, media.shape[0]) as writer:
            writer.add(media)
            return writer.close()

    def open_writer(self, path, cfg, total, **options):
        from .io import AVClipWriter

        layout = layout_of(cfg.codec)
        return AVClipWriter(Path(path), total, cfg.codec.fps, cfg.codec.sample_rate,
                            split=lambda media: split_media(media, layout))

    def validate_config(self, cfg):
        c = cfg.codec
        checks.integer(c.size, "codec.size", 8, 1024)
        checks.integer(c.frames, "codec.frames", 1, 1024)
        checks.number(c.fps, "codec.fps", 0.01, 1000)
        checks.integer(c.sample_rate, "codec.sample_rate", 1000, 192_000)
        checks.integer(c.n_fft, "codec.n_fft", 8, 65_536)
        checks.integer(c.hop, "codec.hop", 1, c.n_fft // 2)
        checks.number(cfg.data.holdout, "data.holdout", 0, 1, hi_open=True)
        checks.integer(cfg.data.clips, "data.clips", 1, 10**9)
        from .sounding_digits import SOUNDS

        if cfg.data.sound not in SOUNDS:
            raise UserError(f"unknown data.sound {cfg.data.sound!r} ({' or '.join(SOUNDS)})")
        layout = layout_of(c)
        from cm_media.nn.registry import resolve_backbone

        params = resolve_backbone(dict(cfg.backbone), self.backbone_presets)
        if params.get("arch") == "av_joint":
            want = {"frames": layout.frames, "size": layout.size, "bins": layout.bins,
                    "spec_frames": layout.spec_frames}
            for key, value in want.items():
                if key in params and params[key] != value:
                    raise UserError(f"backbone.{key} is {params[key]} but the codec makes {value}: leave it out "
                                    f"or set it to {value}")
                cfg.backbone[key] = value  # recorded, as the video modality records a latent codec's config

    def read(self, path, cfg, codec):
        """An mp4 (or any video file) as flat media [1, D]: its first frames at the model's size, in grey, and its
        soundtrack at the model's rate (silence when it has none), cut or padded to one clip."""
        from .io import read_av

        video, audio, fps, rate = read_av(Path(path))  # [1, T, H, W], [1, N] or None
        layout = layout_of(cfg.codec)
        if video.shape[1] < layout.frames:
            raise UserError(f"{path} has {video.shape[1]} frames; this model edits clips of {layout.frames} frames "
                            f"({layout.frames / cfg.codec.fps:g} s at {cfg.codec.fps:g} fps)")
        if abs(fps - cfg.codec.fps) > 1e-3:
            raise UserError(f"{path} is at {fps:g} fps; this model makes {cfg.codec.fps:g} fps clips")
        video = video[:, : layout.frames].float()  # [1, T, H, W]
        if video.shape[-2:] != (layout.size, layout.size):
            video = torch.nn.functional.interpolate(video, size=(layout.size, layout.size), mode="area")
        if audio is None:
            audio = torch.zeros(1, layout.samples)
        else:
            audio = audio.float().mean(0, keepdim=True)  # [1, N] mono
            if rate != cfg.codec.sample_rate:
                import torchaudio.functional as AF

                audio = AF.resample(audio, int(rate), int(cfg.codec.sample_rate))
            audio = torch.nn.functional.pad(audio, (0, max(0, layout.samples - audio.shape[-1])))[:, : layout.samples]
        return pack_media(video[:, None], audio[:, None])  # [1, D]

    def edit_mask(self, spec, model_shape, cfg):
        """`--mask audio` regenerates the soundtrack of the given clip, `--mask video` the picture: [1, 1, D]."""
        if spec not in STREAMS:
            raise UserError(f"--mask for sounding video is 'audio' (make the sound of a given clip) or 'video' "
                            f"(make the picture for a given sound), got {spec!r}")
        layout = layout_of(cfg.codec)
        mask = torch.zeros(1, 1, layout.numel)
        if spec == "audio":
            mask[..., layout.video_numel:] = 1
        else:
            mask[..., : layout.video_numel] = 1
        return mask

    def demo_models(self):
        return list(self.extra_bundled)

    def demo_model(self):
        return "sounding-digits"

    def demo_request(self, cfg):
        names = {c["name"] for c in cfg.backbone.get("cond") or []}
        if "digit" not in names:
            return DemoRequest(4, cfg.data.dataset)
        digits = list(self.demo_digits)
        return DemoRequest(len(digits), cfg.data.dataset, generate={"cond": {"digit": digits}},
                           labels=[f"digit={d}" for d in digits])

    def demo_describe(self, cfg, media, n, steps):
        c = cfg.codec
        return (f"{n} clips of {c.frames} frames ({c.frames / c.fps:g} s at {c.fps:g} fps, {c.size}x{c.size} px) "
                f"with their {c.sample_rate} Hz soundtracks, made together in {steps} step(s); H.264 + AAC mp4")

    def report_html(self, rel, extra=False):
        if not extra and PurePosixPath(rel).suffix.lower() == ".mp4":
            return html_sounding_video(rel)
        return super().report_html(rel, extra)

    def media_rates(self, cfg, media, seconds_per_batch):
        """Clips, frames and audio seconds per second of generation, for flat media [B, D]."""
        if media.ndim != 2:
            return {}
        c = cfg.codec
        b = media.shape[0]
        return {"clips_per_s": b / seconds_per_batch, "frames_per_s": b * c.frames / seconds_per_batch,
                "audio_seconds": c.frames / c.fps,
                "real_time_factor": seconds_per_batch / (b * c.frames / c.fps)}


MODALITY = AVModality()

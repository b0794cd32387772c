"""Video modality: [B, C, T, H, W] clips, the built-in `moving-digits` dataset, mp4/webm/gif output through PyAV."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from cm_media.errors import UserError
from cm_media.modality import DemoRequest, Modality, html_image

from .codec import WRITE_SUFFIXES, VideoCodec, VideoCodecConfig
from .datasets import VideoDataConfig, build_dataset
from .edit import crossfade_fill, frame_mask
from .io import save_frame_grid, write_clips
from .presets import PRESETS


class VideoModality(Modality):
    name = "video"
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
    ]
    bench_options: ClassVar[list] = [
        ("--frames", {"type": int, "help": "video: time and measure memory at this many frames "
                                           "(quality stays at the training length)"}),
    ]
    rate_columns: ClassVar[dict] = {"frames_per_s": "frames/s"}
    demo_order = 20  # the demo's second section, after audio

    def build_codec(self, cfg):
        return VideoCodec(cfg.codec)

    def build_dataset(self, cfg, codec, split="train"):
        return build_dataset(cfg, codec, split)

    def sample_shape(self, cfg, codec, frames=None, seconds=None, fps=None, **options):
        """(C, T, H, W): T from --frames, else --seconds times the fps, else the training clip length."""
        if frames is None and seconds is not None:
            if seconds <= 0:
                raise UserError(f"--seconds must be > 0, got {seconds}")
            frames = max(1, round(seconds * (fps or cfg.codec.fps)))
        frames = cfg.codec.frames if frames is None else frames
        if frames < 1:
            raise UserError(f"--frames must be >= 1, got {frames}")
        return (codec.channels, frames, *codec.size)

    def save(self, media, path, cfg, fps=None, scale=None, separate=False, **options):
        """Write clips [B, C, T, H, W] in [0, 1] by the suffix of `path`.

        .mp4/.m4v/.mov/.mkv (H.264 yuv420p), .webm (VP9) or .gif: one video, holding every clip side by side in
        a grid when B > 1 (with `separate`: numbered files 0000.mp4, ... in a folder named after `path`), plus
        `<stem>_frames.png`, a frame grid (a row per clip, a column per frame) for a quick look.
        .png: only the frame grid. No suffix: .mp4. Returns the written paths, the video(s) first.
        """
        path = Path(path)
        if not path.suffix:
            path = path.with_suffix(self.default_suffix)
        fps = cfg.codec.fps if fps is None else fps
        if fps <= 0:
            raise UserError(f"--fps must be > 0, got {fps}")
        if scale is not None and scale < 1:
            raise UserError(f"--scale must be >= 1, got {scale}")
        suffix = path.suffix.lower()
        if suffix == ".png":
            return [save_frame_grid(media, path)]
        if suffix not in WRITE_SUFFIXES:
            raise UserError(f"cannot write {path}: use one of {', '.join(sorted(WRITE_SUFFIXES | {'.png'}))}")
        if separate:
            folder = path.with_suffix("")
            out = [write_clips(clip[None], folder / f"{i:04d}{suffix}", fps, scale) for i, clip in enumerate(media)]
        else:
            out = [write_clips(media, path, fps, scale)]
        return out + [save_frame_grid(media, path.with_name(f"{path.stem}_frames.png"))]

    def read(self, path, cfg, codec):
        return codec.read(path)[None]  # [1, C, T, H, W]: the first clip length of the file

    def edit_mask(self, spec, model_shape, cfg):
        return frame_mask(spec, model_shape)

    def edit_guess(self, media, mask, cfg):
        return crossfade_fill(media, mask[0, 0, :, 0, 0].nonzero().flatten().tolist())  # frames to regenerate

    def demo_request(self, cfg):
        return DemoRequest(4, "video.mp4", save={"separate": True})  # video/0000.mp4, ... and video_frames.png

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

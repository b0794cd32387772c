"""Audio modality: waveform, compressed-STFT or log-mel model tensors, built-in `tones`, wav/flac output."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from cm_media.errors import UserError
from cm_media.modality import DemoRequest, Modality

from . import stft_unet  # noqa: F401  registers backbone.arch "stft_unet"
from .codec import peak_limit, save_clips
from .datasets import AudioDataConfig, build_dataset
from .edit import read_recording, time_mask
from .presets import PRESETS
from .representations import AudioCodecConfig, build_codec


class AudioModality(Modality):
    name = "audio"
    DataConfig = AudioDataConfig
    CodecConfig = AudioCodecConfig
    backbone_presets = PRESETS
    default_suffix = ".wav"
    generate_options: ClassVar[list] = [
        ("--seconds", {"type": float, "help": "audio/video: clip length in seconds (default: the training length)"}),
        ("--audio-format", {"choices": ["pcm16", "pcm24", "float"],
                            "help": "audio: sample format of the written files (default pcm16; float is wav only)"}),
        ("--peak", {"type": float, "help": "audio: scale each clip to this peak level, e.g. 0.9 "
                                           "(default: only scale down clips that would clip)"}),
    ]
    bench_options: ClassVar[list] = [
        ("--seconds", {"type": float, "help": "audio: time and measure memory at this clip length "
                                              "(quality stays at the training length)"}),
    ]
    rate_columns: ClassVar[dict] = {"real_time_factor": "RTF"}
    demo_order = 10  # the demo's first section

    def build_codec(self, cfg):
        return build_codec(cfg.codec)

    def build_dataset(self, cfg, codec, split="train"):
        return build_dataset(cfg, codec, split)

    def num_samples(self, cfg, seconds: float | None = None) -> int:
        """Waveform samples of a clip of `seconds` (default: the training crop length)."""
        seconds = cfg.data.seconds if seconds is None else float(seconds)
        if not seconds > 0:
            raise UserError(f"--seconds must be > 0, got {seconds}")
        return max(1, round(seconds * cfg.codec.sample_rate))

    def sample_shape(self, cfg, codec, seconds=None, **options):
        frames = codec.frames(self.num_samples(cfg, seconds))
        if cfg.codec.representation == "waveform":
            return (codec.channels, frames)
        bins = codec.bins if cfg.codec.representation == "stft" else cfg.codec.n_mels
        return (codec.channels, bins, frames)

    def save(self, media, path, cfg, seconds=None, audio_format=None, peak=None, **options):
        """Write [B, C, T] waveforms as wav/flac (by suffix; a folder when there is none), cut to --seconds if given."""
        path = Path(path)
        if path.suffix.lower() not in ("", ".wav", ".flac"):
            raise UserError(f"audio output must be a .wav or .flac file or a folder, got {path}")
        if peak is not None:
            if not 0 < peak <= 1:
                raise UserError(f"--peak must be in (0, 1], got {peak}")
            media = media / media.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-9) * peak
        media = peak_limit(media)
        length = None if seconds is None else self.num_samples(cfg, seconds)  # STFT/mel decode to whole hops
        return save_clips(media, path, cfg.codec.sample_rate, audio_format or "pcm16", length)

    def read(self, path, cfg, codec):
        return read_recording(Path(path), cfg)  # [1, C, T]

    def edit_mask(self, spec, model_shape, cfg):
        return time_mask(spec, model_shape, cfg, self.build_codec(cfg))

    def demo_request(self, cfg):
        # 4 clips, each as long as the clips the model was trained on: one note each for the bundled tones
        seconds = {"seconds": cfg.data.seconds}
        return DemoRequest(4, "audio", generate=seconds, save=seconds)

    def demo_describe(self, cfg, media, n, steps):
        rate = cfg.codec.sample_rate
        return (f"{n} clips of {media.shape[-1] / rate:.1f} s at {rate} Hz ({media.shape[1]} channel(s)), "
                f"{steps} step(s)")

    def media_rates(self, cfg, media, seconds_per_batch):
        """Real-time factor: generation seconds / audio seconds, for waveforms [B, C, T]."""
        if media.ndim != 3:
            return {}
        rate = next((getattr(cfg.codec, k) for k in ("sample_rate", "sr", "rate") if hasattr(cfg.codec, k)), None)
        if not rate:
            return {}
        audio_s = media.shape[-1] / float(rate)
        return {"audio_seconds": audio_s, "real_time_factor": seconds_per_batch / (media.shape[0] * audio_s)}


MODALITY = AudioModality()

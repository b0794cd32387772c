"""Audio modality: waveform, compressed-STFT or log-mel model tensors, built-in `tones`, the rendered
`spoken_digits` and `notes` sets, wav/flac output; bundled models `audio` (tones), `spoken-digits` and `notes`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

from cm_media import checks
from cm_media.errors import UserError
from cm_media.modality import DemoRequest, Modality

from . import (
    spec_unet,  # noqa: F401  registers backbone.arch "spec_unet"
    stft_unet,  # noqa: F401  registers backbone.arch "stft_unet"
)
from .codec import AudioCodecConfig, build_codec
from .datasets import AudioDataConfig, build_dataset, rendered_note
from .edit import read_recording, time_mask
from .io import ClipWriter
from .presets import PRESETS


class AudioModality(Modality):
    name = "audio"
    DataConfig = AudioDataConfig
    CodecConfig = AudioCodecConfig
    backbone_presets = PRESETS
    default_suffix = ".wav"
    decode_keys = ("griffin_lim_iters",)  # the mel codec's phase reconstruction: trained tensors are the same
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
    # method_comparison.py on tones at equal training CPU seconds (benchmarks/README.md, "One-step methods"): from
    # data, iCT (1-step FD 22.2; sCT 24.8, MeanFlow 84.6); from a teacher, CMT at one step (8.14; CD 10.1, sCD 11.3,
    # ECT 11.7; at two steps CD is ahead, 4.97 vs 10.1)
    default_methods: ClassVar[dict[str, str]] = {"from_data": "ict", "from_teacher": "cmt"}
    # `cm-media generate spoken-digits --class seven`, `cm-media generate notes --cond pitch=60 --cond instrument=flute`
    extra_bundled: ClassVar[dict] = {"spoken-digits": "pretrained_spoken_digits", "notes": "pretrained_notes"}
    # the notes the demo asks the notes model for: (MIDI pitch, instrument family)
    demo_notes: ClassVar[list] = [("60", "keyboard"), ("64", "guitar"), ("67", "brass"), ("72", "flute"),
                                  ("48", "bass"), ("55", "reed"), ("76", "string"), ("84", "mallet")]

    def build_codec(self, cfg):
        return build_codec(cfg.codec)

    def build_dataset(self, cfg, codec, split="train"):
        return build_dataset(cfg, codec, split)

    def num_samples(self, cfg, seconds: float | None = None) -> int:
        """Waveform samples of a clip of `seconds` (default: the training crop length)."""
        seconds = cfg.data.seconds if seconds is None else checks.number(seconds, "--seconds", 0, lo_open=True)
        return max(1, round(seconds * cfg.codec.sample_rate))

    def max_seconds(self, cfg, codec) -> float:
        """The longest clip one sample may be: checks.MAX_SAMPLE_ELEMENTS model values."""
        one = self._shape(cfg, codec, 1)
        per_frame = math.prod(one[:-1])
        return codec.samples(checks.MAX_SAMPLE_ELEMENTS // per_frame) / cfg.codec.sample_rate

    def _shape(self, cfg, codec, samples: int) -> tuple[int, ...]:
        frames = codec.frames(samples)
        if cfg.codec.representation == "waveform":
            return (codec.channels, frames)
        bins = codec.bins if cfg.codec.representation == "stft" else cfg.codec.n_mels
        return (codec.channels, bins, frames)

    def sample_shape(self, cfg, codec, seconds=None, **options):
        if seconds is not None:
            limit = self.max_seconds(cfg, codec)
            seconds = checks.number(seconds, "--seconds", 0, lo_open=True)
            if seconds > limit:
                raise UserError(f"--seconds {seconds:g} is too long: this model makes clips of at most {limit:.1f} s "
                                f"({checks.MAX_SAMPLE_ELEMENTS:,} model values per clip)")
        return self._shape(cfg, codec, self.num_samples(cfg, seconds))

    def save(self, media, path, cfg, seconds=None, audio_format=None, peak=None, **options):
        """Write [B, C, T] waveforms as wav/flac (by suffix; a folder when there is none), cut to --seconds if given."""
        with self.open_writer(path, cfg, media.shape[0], seconds=seconds, audio_format=audio_format,
                              peak=peak) as writer:
            writer.add(media)
            return writer.close()

    def open_writer(self, path, cfg, total, seconds=None, audio_format=None, peak=None, **options):
        """Clips written batch by batch: one file, numbered siblings `x_000.wav ...`, or a folder of them."""
        if peak is not None:
            checks.number(peak, "--peak", 0, 1, lo_open=True)
        length = None if seconds is None else self.num_samples(cfg, seconds)  # STFT/mel decode to whole hops
        return ClipWriter(Path(path), total, cfg.codec.sample_rate, audio_format or "pcm16", length, peak, limit=True)

    def validate_config(self, cfg):
        d, c = cfg.data, cfg.codec
        checks.number(d.seconds, "data.seconds", 0, 3600, lo_open=True)
        checks.number(d.holdout, "data.holdout", 0, 1, hi_open=True)
        for key in ("midi_low", "midi_high"):
            if hasattr(d, key):
                checks.integer(getattr(d, key), f"data.{key}", 0, 127)
        if hasattr(d, "tones"):
            checks.integer(d.tones, "data.tones", 1, 10**7)
        checks.integer(c.sample_rate, "codec.sample_rate", 1000, 384_000)
        checks.integer(c.channels, "codec.channels", 1, 16)
        checks.number(c.peak, "codec.peak", 0, 1, lo_open=True)
        checks.number(c.wave_scale, "codec.wave_scale", 0, lo_open=True)
        checks.number(c.spec_scale, "codec.spec_scale", 0, lo_open=True)
        checks.number(c.mel_floor, "codec.mel_floor", 0, lo_open=True)
        checks.integer(c.n_fft, "codec.n_fft", 4, 65_536)
        checks.integer(c.n_mels, "codec.n_mels", 1, 1024)
        checks.integer(c.griffin_lim_iters, "codec.griffin_lim_iters", 1, 10_000)

    def read(self, path, cfg, codec):
        return read_recording(Path(path), cfg)  # [1, C, T]

    def edit_mask(self, spec, model_shape, cfg):
        return time_mask(spec, model_shape, cfg, self.build_codec(cfg))

    def demo_models(self):
        return [self.name, *self.extra_bundled]

    def data_note(self, cfg):
        return rendered_note(cfg)

    def demo_request(self, cfg):
        # clips as long as the clips the model was trained on: 4 tones for the unconditional bundled model; a
        # conditional model is asked for each of its words (classes), or for notes by pitch and instrument
        seconds = {"seconds": cfg.data.seconds}
        target = "audio" if cfg.data.dataset in ("tones", "folder") else cfg.data.dataset
        conds = {c["name"]: [str(v) for v in c.get("classes") or []] for c in cfg.backbone.get("cond") or []
                 if c.get("kind", "class") == "class" and c.get("classes")}
        if not conds:
            return DemoRequest(4, target, generate=seconds, save=seconds)
        if set(conds) == {"pitch", "instrument"}:
            pairs = [(p, i) for p, i in self.demo_notes if p in conds["pitch"] and i in conds["instrument"]]
            request = {"pitch": [p for p, _ in pairs], "instrument": [i for _, i in pairs]}
        elif len(conds) == 1 and len(next(iter(conds.values()))) <= 12:  # every class once (the ten words)
            request = dict(conds)
        else:  # up to 8 samples, each condition's classes evenly spaced
            request = {k: [v[round(j * (len(v) - 1) / 7)] for j in range(8)] for k, v in conds.items()}
        n = max(len(v) for v in request.values())
        labels = [", ".join(f"{k}={v[j % len(v)]}" for k, v in request.items()) for j in range(n)]
        return DemoRequest(n, target, generate={**seconds, "cond": request}, save=seconds, labels=labels)

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

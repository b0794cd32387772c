"""An independent judge of spoken words: CMU PocketSphinx (its US-English acoustic model and dictionary ship in the
`pocketsphinx` wheel) restricted to a grammar of the words asked for, as TTS papers report an ASR's word accuracy.

Nobody in this project trained it, so it cannot share a blind spot with the models or with the project's own
classifier (feature_net.py). Used by the benchmarks only; install with `pip install cm-media[asr]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchaudio.functional as AF

from cm_media.errors import UserError

RATE = 16000  # the shipped en-us acoustic model's sample rate
PEAK = 0.8  # clips are scaled to this peak before recognition (spoken_digits.PEAK)


def _decoder(words: Sequence[str]):
    """A PocketSphinx decoder whose only search is the JSGF grammar "exactly one of `words`"."""
    try:
        from pocketsphinx import Config, Decoder
    except ImportError:
        raise UserError("the speech recognizer needs the pocketsphinx package: pip install 'cm-media[asr]'") from None
    bad = [w for w in words if not w.isalpha()]
    if not words or bad:
        raise ValueError(f"grammar words must be non-empty alphabetic words, got {list(words)}")
    # no lattice rescoring (bestpath): 78% of the held-out real words instead of 74% (its LM weights do not
    # suit a one-word grammar; measured on the real clips only)
    decoder = Decoder(Config(samprate=RATE, loglevel="FATAL", lm=None, bestpath=False))
    missing = [w for w in words if decoder.lookup_word(w.lower()) is None]
    if missing:
        raise ValueError(f"words not in the recognizer's dictionary: {missing}")
    grammar = "#JSGF V1.0;\ngrammar words;\npublic <word> = " + " | ".join(w.lower() for w in words) + ";\n"
    decoder.add_jsgf_string("words", grammar)
    decoder.activate_search("words")
    return decoder


class WordRecognizer:
    """recognize(media [N, C, T] at `sample_rate`) -> word index [N] into `words` (-1: nothing recognized)."""

    def __init__(self, words: Sequence[str]):
        self.words = [w.lower() for w in words]
        self.decoder = _decoder(self.words)

    @staticmethod
    def pcm(clip: torch.Tensor, sample_rate: int) -> bytes:
        """A clip [C, T] as 16 kHz mono 16-bit PCM at peak PEAK (the level of the rendered words: a quiet
        generated clip is judged on its content, not its level; a silent one stays silent)."""
        mono = clip.float().mean(0)
        if sample_rate != RATE:
            mono = AF.resample(mono, sample_rate, RATE)
        mono = mono * (PEAK / mono.abs().amax().clamp_min(1e-4))
        return (mono.clamp(-1, 1) * 32767).round().numpy().astype(np.int16).tobytes()

    def recognize_one(self, clip: torch.Tensor, sample_rate: int) -> str:
        """The grammar word heard in one clip [C, T] ("" when the decoder finds none)."""
        d = self.decoder
        d.start_utt()
        d.process_raw(self.pcm(clip, sample_rate), full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""

    def recognize(self, media: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Word indices [N] of clips [N, C, T]; -1 where nothing (or a non-grammar string) was recognized."""
        if media.dim() != 3:
            raise ValueError(f"media must be [N, C, T], got shape {tuple(media.shape)}")
        index = {w: i for i, w in enumerate(self.words)}
        return torch.tensor([index.get(self.recognize_one(c, sample_rate), -1) for c in media], dtype=torch.long)

    def accuracy(self, media: torch.Tensor, sample_rate: int, labels: torch.Tensor) -> float:
        """Share of clips recognized as their label's word."""
        return (self.recognize(media, sample_rate) == labels.long().cpu()).float().mean().item()


__all__ = ["WordRecognizer"]

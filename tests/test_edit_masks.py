"""Per-modality `--mask` specs for zero-shot editing."""

import numpy as np
import pytest
import soundfile as sf
import torch

from cm_media.errors import UserError
from cm_media.registry import get_modality
from cm_media.runs.config import load_config
from modalities.audio.edit import read_recording, time_mask
from modalities.image.masks import image_mask
from modalities.video.edit import frame_mask


def test_image_masks():
    assert image_mask("left", 8, 8)[..., :4].eq(1).all() and image_mask("left", 8, 8)[..., 4:].eq(0).all()
    m = image_mask("box:1,2,3,7", 8, 8)
    assert m.sum().item() == 2 * 5 and m[0, 0, 2, 1] == 1 and m[0, 0, 1, 1] == 0
    for bad in ("box:0,0,9,9", "box:3,3,3,5", "blob"):
        with pytest.raises(UserError):
            image_mask(bad, 8, 8)


def test_video_frame_masks():
    shape = (1, 1, 8, 4, 4)
    assert frame_mask("interpolate", shape)[0, 0, :, 0, 0].tolist() == [0, 1, 1, 1, 1, 1, 1, 0]
    assert frame_mask("predict:5", shape)[0, 0, :, 0, 0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert frame_mask("1,3-4", shape)[0, 0, :, 0, 0].tolist() == [0, 1, 0, 1, 1, 0, 0, 0]
    for bad in ("8", "x", "predict:9"):
        with pytest.raises(UserError):
            frame_mask(bad, shape)


@pytest.mark.parametrize("representation", ["waveform", "stft"])
def test_audio_time_masks(tmp_path, repo_root, representation):
    # the backbone must fit the representation: configs are checked by building the network (on no memory)
    cfg = load_config(f"{repo_root}/configs/experiments/audio/tones_waveform_ict.yaml", [f"codec.representation={representation}",
                                                                            "backbone.preset=tiny"])
    m = get_modality("audio")
    codec = m.build_codec(cfg)
    rate = cfg.codec.sample_rate
    wav = np.sin(2 * np.pi * 440 * np.arange(44100) / 44100.0).astype(np.float32) * 0.5  # 1 s
    sf.write(tmp_path / "a.wav", wav, 44100)
    media = read_recording(tmp_path / "a.wav", cfg)  # resampled to the config's rate
    assert media.shape == (1, cfg.codec.channels, rate)
    shape = tuple(codec.encode(media).shape)
    mask = time_mask("0.25:0.5", shape, cfg, codec)
    assert mask.shape[2:] == shape[2:]
    frac = mask[0, 0].reshape(-1, shape[-1])[0].mean().item() if len(shape) > 3 else mask.mean().item()
    assert frac == pytest.approx(0.25 * rate / media.shape[-1], abs=0.05)
    cont = time_mask("continue:0.5", shape, cfg, codec)
    assert cont[..., -1].eq(1).all() and cont[..., 0].eq(0).all()
    for bad in ("0.5:0.25", "abc", "5:6", "0.1:inf", "nan:0.2", "continue:nan", "0.5:1.5", "1:2:3"):
        with pytest.raises(UserError):
            time_mask(bad, shape, cfg, codec)


@pytest.mark.parametrize("config,spec", [("configs/experiments/audio/tones_waveform_ict.yaml", "0.1:0.35"),
                                         ("configs/video/moving_digits_ict.yaml", "interpolate")])
def test_modality_edit_keeps_unmasked_media(repo_root, config, spec, tmp_path):
    """Audio infilling and video interpolation through the modality hooks keep the kept region exactly."""
    from cm_media.runs.generator import Generator
    from cm_media.runs.model import build_model

    cfg = load_config(f"{repo_root}/{config}", ["backbone.preset=tiny"])
    modality, codec, model = build_model(cfg)
    for p in model.parameters():  # an untrained but non-trivial network
        p.data.normal_(0, 0.02)
    gen = Generator(cfg, model.eval(), codec, modality, torch.device("cpu"), tmp_path)
    media = codec.decode(modality.build_dataset(cfg, codec, "eval")[0][None])  # one real clip
    mask = modality.edit_mask(spec, tuple(codec.encode(media).shape), cfg)
    out = gen.edit(media, mask, steps=2)
    keep = mask.expand_as(media) == 0
    assert out.shape == media.shape
    assert torch.allclose(out[keep], media[keep], atol=1e-5)
    assert not torch.allclose(out[~keep], media[~keep])

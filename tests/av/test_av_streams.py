"""Sounding video with per-stream noise levels: fine-tuning a shared-noise run into one that holds a stream clean
(train.init_from, method.clean_stream_p, backbone.stream_noise), and edits that keep a whole stream generating
the other from it clean."""

from pathlib import Path

import pytest
import torch

import cm_media
from cm_media.cli import main
from cm_media.errors import UserError
from cm_media.runs import checkpoint as ckpt
from cm_media.runs.config import load_config
from cm_media.runs.loader import weights_of
from cm_media.runs.model import build_model
from cm_media.runs.training import init_weights
from modalities.av.codec import layout_of, split_media

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "av" / "sounding_digits_ict.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"train.steps": 2, "train.batch_size": 2, "train.bf16": "false", "train.samples": 0,
        "train.log_every": 1, "train.warmup_steps": 1, "backbone.preset": "tiny", "data.clips": 16,
        "codec.frames": 4, "codec.size": 32, "sample.bf16": "false"}


def train(out: Path, **sets) -> int:
    argv = ["train", str(CONFIG), "--out", str(out), "--no-progress"]
    for k, v in {**TINY, **sets}.items():
        argv += ["--set", f"{k}={v}"]
    return main(argv)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("av_streams")
    assert train(root / "base") == 0
    assert train(root / "streams", **{"train.init_from": root / "base", "backbone.stream_noise": "true",
                                      "method.clean_stream_p": 1.0}) == 0
    return root


def test_init_from_loads_the_source_weights_and_keeps_new_modules_fresh(runs):
    cfg = load_config(runs / "streams" / "config.yaml")
    model = build_model(cfg)[2]
    fresh = init_weights(model, str(runs / "base"))
    assert fresh == ["backbone.audio_sees", "backbone.video_hears"]
    source = weights_of(ckpt.load_checkpoint(ckpt.latest_checkpoint(runs / "base"))[0])
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in source.items())
    assert own["backbone.video_hears.weight"].abs().max() == 0  # zero-initialized: step 0 is the source model


def test_init_from_a_different_backbone_is_a_clear_error(runs, tmp_path, capsys):
    code = train(tmp_path / "wide", **{"train.init_from": runs / "base", "backbone.channels": 16})
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"train.init_from {runs / 'base'}: its weights do not fit this backbone" in err[0]
    assert train(tmp_path / "nowhere", **{"train.init_from": tmp_path / "missing"}) == 2
    assert "source not found" in capsys.readouterr().err


def test_clean_stream_p_on_a_single_stream_backbone_is_a_clear_error(tmp_path, capsys):
    assert train(tmp_path / "shared", **{"method.clean_stream_p": 0.5}) == 2
    assert "method.clean_stream_p needs a multi-stream backbone" in capsys.readouterr().err


@pytest.mark.parametrize("stream", ["audio", "video"])
def test_an_edit_of_one_stream_keeps_the_other_and_generates_from_it_clean(runs, stream):
    gen = cm_media.load(runs / "streams")
    media = gen.generate(2, steps=1, seed=3, cond={"digit": ["1", "2"]})
    mask = gen.modality.edit_mask(stream, None, gen.cfg)
    held = gen.held_streams(mask)
    assert held.tolist() == ([True, False] if stream == "audio" else [False, True])
    calls = []
    net = gen.net(False)
    hook = net.backbone.register_forward_hook(lambda m, args, out: calls.append(args[1].clone()))
    try:
        out = gen.edit(media, mask, steps=1, seed=0, cond={"digit": ["1", "2"]})
    finally:
        hook.remove()
    lay = layout_of(gen.cfg.codec)
    kept = 0 if stream == "audio" else 1
    before = split_media(gen.codec.decode(gen.codec.encode(media)), lay)[kept]  # the kept stream as decoded
    after = split_media(out, lay)
    assert torch.allclose(after[kept], before, atol=1e-5)
    assert not torch.equal(after[1 - kept], split_media(media, lay)[1 - kept])  # regenerated
    assert len(calls) == 1 and calls[0].shape == (2, 2)  # one evaluation, one noise level per stream
    clean = calls[0][:, 0 if stream == "audio" else 1]
    assert torch.allclose(clean, torch.log(torch.tensor(0.002)) / 4)  # the kept stream enters at sigma_min


def test_a_shared_noise_run_edits_with_the_masked_sampler(runs):
    gen = cm_media.load(runs / "base")
    assert gen.held_streams(gen.modality.edit_mask("audio", None, gen.cfg)) is None


def test_init_from_with_a_bad_file_names_it(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="bad.safetensors"):
        init_weights(torch.nn.Linear(1, 1), str(bad))


def test_the_soundtrack_stream_is_declared_complex_with_the_codecs_magnitudes():
    """held_data_magnitude reads the audio stream as complex values (real parts, then imaginary): their magnitudes
    must be the codec's compressed STFT magnitudes of the clip, and a magnitude swap onto itself is the identity."""
    from cm_media.math import streams
    from modalities.av.sounding_digits import SoundingDigits

    cfg = load_config(CONFIG, [f"{k}={v}" for k, v in {**TINY, "backbone.stream_noise": "true"}.items()])
    _, codec, model = build_model(cfg)
    assert streams.complex_streams(model) == [False, True]
    video, audio = SoundingDigits("train", 2, frames=cfg.codec.frames, size=cfg.codec.size).get_clips(range(2))
    x = codec.encode(torch.cat([video.flatten(1), audio.flatten(1)], 1))  # [B, 1, D]
    sound = x.flatten(1).split(streams.stream_sizes(model), 1)[1]  # [B, 2 * F * frames]
    n = sound.shape[1] // 2
    spec = codec.stft.stft(audio)[:, 0, : codec.layout.bins, : codec.layout.spec_frames]  # [B, F, frames] complex
    want = spec.abs().pow(cfg.codec.compress) * cfg.codec.spec_scale
    assert torch.allclose(torch.complex(sound[:, :n], sound[:, n:]).abs(), want.flatten(1), atol=1e-4)
    assert torch.allclose(streams.with_magnitude(sound, sound), sound, atol=1e-5)

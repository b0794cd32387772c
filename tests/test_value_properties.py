"""Property-based checks of value parsing (issue 17): any number, NaN and infinity included, is either accepted
within its documented range or refused with one UserError; never a traceback, never a silent substitute."""

import copy
import math
import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cm_media import checks  # noqa: E402
from cm_media.cli import main  # noqa: E402
from cm_media.errors import UserError  # noqa: E402
from cm_media.registry import get_modality  # noqa: E402
from cm_media.runs.config import config_from_dict, load_yaml  # noqa: E402
from modalities.audio.edit import time_mask  # noqa: E402
from modalities.video.edit import frame_mask  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**30), 10**30)

# key -> what an accepted value satisfies
RANGES = {
    ("train", "lr"): lambda v: 0 < v < math.inf,
    ("train", "grad_clip"): lambda v: 0 < v < math.inf,
    ("train", "ema_decay"): lambda v: 0 <= v < 1,
    ("train", "weight_decay"): lambda v: 0 <= v < math.inf,
    ("train", "cond_dropout"): lambda v: 0 <= v < 1,
    ("train", "cond_dropout_each"): lambda v: 0 <= v < 1,
    ("method", "rho"): lambda v: 0 < v < math.inf,
    ("method", "sigma_data"): lambda v: 0 < v < math.inf,
    ("method", "sigma_min"): lambda v: 0 < v < 80,
    ("data", "holdout"): lambda v: 0 <= v < 1,
}


@pytest.fixture(scope="module")
def raw_digits():
    return load_yaml(f"{ROOT}/configs/image/digits_ict.yaml")


@FEW
@given(key=st.sampled_from(sorted(RANGES)), value=ANY_FLOAT)
def test_config_numbers_are_in_range_or_refused(raw_digits, key, value):
    raw = copy.deepcopy(raw_digits)
    raw.setdefault(key[0], {})[key[1]] = value
    try:
        cfg = config_from_dict(raw)
    except UserError as exc:
        assert ".".join(key) in str(exc) and "\n" not in str(exc)
        return
    assert RANGES[key](getattr(getattr(cfg, key[0]), key[1]))


@FEW
@given(key=st.sampled_from(["steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints", "seed"]),
       value=st.integers(-(10**40), 10**40) | st.floats(allow_nan=True, allow_infinity=True))
def test_config_integers_are_in_range_or_refused(raw_digits, key, value):
    raw = copy.deepcopy(raw_digits)
    raw.setdefault("train", {})[key] = value
    try:
        cfg = config_from_dict(raw)
    except UserError as exc:
        assert f"train.{key}" in str(exc)
        return
    got = getattr(cfg.train, key)
    assert isinstance(got, int) and 0 <= got < 2**63 and got == value


@FEW
@given(spec=st.text(alphabet="0123456789-, ", max_size=12) | st.sampled_from(
    ["interpolate", "predict:3", "predict:-1", "predict:99", "2-99999999999", "5-3"]))
def test_video_masks_select_frames_inside_the_clip_or_are_refused(spec):
    try:
        mask = frame_mask(spec, (1, 1, 16, 4, 4))
    except UserError:
        return
    chosen = mask[0, 0, :, 0, 0]
    assert chosen.sum() >= 1 and set(chosen.unique().tolist()) <= {0.0, 1.0}


@pytest.fixture(scope="module")
def audio_model():
    from cm_media.runs.config import load_config

    cfg = load_config(f"{ROOT}/configs/audio/tones_spectrogram_ict.yaml", [])
    codec = get_modality("audio").build_codec(cfg)
    return cfg, codec, (1, codec.channels, codec.bins, codec.frames(cfg.codec.sample_rate))  # 1 s


@FEW
@given(start=ANY_FLOAT, end=ANY_FLOAT | st.none())
def test_audio_masks_lie_inside_the_input_or_are_refused(audio_model, start, end):
    cfg, codec, shape = audio_model
    spec = f"continue:{start}" if end is None else f"{start}:{end}"
    try:
        mask = time_mask(spec, shape, cfg, codec)
    except UserError:
        return
    assert math.isfinite(float(start)) and 0 <= float(start) < 1.01
    assert mask.sum() > 0


@settings(max_examples=25, deadline=None)
@given(option=st.sampled_from(["-n", "--steps", "--batch-size", "--seed"]),
       value=st.integers(-(10**30), 0) | st.integers(2**63, 10**30))
def test_out_of_range_generate_values_exit_2(option, value, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen")
    if option == "--seed" and value == 0:
        value = -1
    assert main(["generate", "image", option, str(value), "--out", str(folder / "g.png")]) == 2
    assert not any(folder.iterdir())


@FEW
@given(value=ANY_FLOAT, lo=st.sampled_from([None, 0, 1]), hi=st.sampled_from([None, 1, 100]))
def test_checks_number_accepts_exactly_finite_values_in_range(value, lo, hi):
    try:
        got = checks.number(value, "--x", lo, hi)
    except UserError as exc:
        assert str(exc).startswith("--x must be")
        return
    assert math.isfinite(got) and (lo is None or got >= lo) and (hi is None or got <= hi)

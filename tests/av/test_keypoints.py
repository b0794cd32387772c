"""The audio tower's view of the digit's motion (modalities/av/keypoints.py): soft-argmax positions, the frame
time of each audio frame, interpolation, and a trained joint net gaining the module unchanged."""

import pytest
import torch

from modalities.av.joint_net import JointNet, JointNetConfig
from modalities.av.keypoints import KeypointExchange, frame_to_audio_times, lerp_frames, soft_argmax

pytestmark = pytest.mark.usefixtures("one_thread")


def test_soft_argmax_of_a_sharp_map_is_its_cell_in_minus_one_to_one():
    heat = torch.full((1, 2, 3, 5, 9), -1e4)
    heat[0, 0, :, 1, 8] = 0.0  # row 1 of 5, last column of 9
    heat[0, 1, :, 4, 0] = 0.0
    yx = soft_argmax(heat)  # [B, K, T, 2]
    assert yx.shape == (1, 2, 3, 2)
    assert torch.allclose(yx[0, 0], torch.tensor([-0.5, 1.0]).expand(3, 2))
    assert torch.allclose(yx[0, 1], torch.tensor([1.0, -1.0]).expand(3, 2))
    assert torch.allclose(soft_argmax(torch.zeros(1, 1, 1, 4, 4)), torch.zeros(1, 1, 1, 2), atol=1e-6)  # flat: centre


def test_audio_frame_times_are_the_centres_of_their_stft_frames():
    # 16 frames, 128 STFT frames (8 per video frame, STFT frame i on video frame i / 8)
    assert torch.allclose(frame_to_audio_times(16, 128, 128)[:9], torch.arange(9) / 8)
    # 2 STFT frames per audio frame: centred half an STFT frame on, 1/16 of a video frame
    assert torch.allclose(frame_to_audio_times(16, 64, 128)[:3], torch.tensor([1, 5, 9]) / 16)
    # 8 per audio frame (one per video frame): 3.5 STFT frames on; the last ones clamp to the last frame
    t = frame_to_audio_times(16, 16, 128)
    assert torch.allclose(t[:2], torch.tensor([3.5, 11.5]) / 8) and t.max() == 15


def test_lerp_frames_is_exact_at_frames_and_linear_between():
    feats = torch.tensor([[[0.0, 2.0, 10.0]]])  # [B, C, T]
    out = lerp_frames(feats, torch.tensor([0.0, 0.5, 1.0, 1.25, 2.0]))
    assert torch.allclose(out, torch.tensor([[[0.0, 1.0, 2.0, 4.0, 10.0]]]))


def test_keypoint_exchange_starts_as_the_identity_and_then_reads_the_motion_near_its_time():
    torch.manual_seed(0)
    times = frame_to_audio_times(12, 24, 24)  # two audio frames per video frame
    kp = KeypointExchange(8, 8, keypoints=2, hidden=16, times=times)
    hv, ha = torch.randn(2, 8, 12, 4, 4), torch.randn(2, 8, 3, 24)  # [B, Cv, T, h, w], [B, Ca, F, Ta]
    assert torch.equal(kp(hv, ha), ha)  # the output conv starts at zero
    torch.nn.init.normal_(kp.to_audio.weight, 0, 0.1)
    out = kp(hv, ha)
    assert out.shape == ha.shape and not torch.allclose(out, ha)
    moved = hv.clone()
    moved[:, :, 6] = moved[:, :, 6].roll(1, dims=-1)  # frame 6's picture shifted one cell (the norm's stats stay)
    delta = (kp(moved, ha) - out).abs().amax(dim=(0, 1, 2))  # [Ta]
    # two 3-tap convs over frames (4..8), interpolation (3..9) and a 3-tap conv over audio frames (one more)
    assert delta[(times < 2.5) | (times > 9.5)].max() < 1e-6
    assert delta[(times >= 5) & (times <= 7)].min() > 1e-4


def test_a_joint_net_without_keypoints_loads_into_one_with_them_unchanged():
    base = dict(frames=4, size=16, bins=16, spec_frames=16, audio_patch=[2, 2], channels=8, channel_mult=[1, 2],
                temporal_attn_levels=[1], stream_noise=True)
    torch.manual_seed(0)
    old = JointNet(JointNetConfig(**base)).eval()
    with torch.no_grad():
        for p in old.parameters():
            p.normal_(0, 0.05)
    new = JointNet(JointNetConfig(**base, keypoints=3, keypoint_levels=[0])).eval()
    missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
    assert not unexpected and missing and all(".3." in k for k in missing)  # only the new modules
    x = torch.randn(2, 1, 4 * 16 * 16 + 2 * 16 * 16)
    with torch.no_grad():
        c = torch.rand(2, 2)
        assert torch.equal(old(x, c), new(x, c))


def test_the_audio_tail_starts_as_the_identity_and_only_ever_changes_the_soundtrack():
    base = dict(frames=4, size=16, bins=16, spec_frames=16, audio_patch=[2, 2], channels=8, channel_mult=[1, 2],
                temporal_attn_levels=[1], stream_noise=True, keypoints=3, keypoint_levels=[0])
    torch.manual_seed(0)
    old = JointNet(JointNetConfig(**base)).eval()
    with torch.no_grad():
        for p in old.parameters():
            p.normal_(0, 0.05)
    new = JointNet(JointNetConfig(**base, audio_tail=2)).eval()
    missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("tail.") for k in missing)
    x, c = torch.randn(2, 1, 4 * 16 * 16 + 2 * 16 * 16), torch.rand(2, 2)
    with torch.no_grad():
        assert torch.equal(old(x, c), new(x, c))
        for p in new.tail.parameters():
            p.normal_(0, 0.05)
        out_old, out_new = old(x, c), new(x, c)
    video = 4 * 16 * 16  # the flat tensor's video part comes first (codec.py)
    assert torch.equal(out_old[..., :video], out_new[..., :video])
    assert not torch.allclose(out_old[..., video:], out_new[..., video:])


def test_the_audio_tail_needs_keypoints():
    with pytest.raises(ValueError, match="backbone.keypoints"):
        JointNet(JointNetConfig(frames=4, size=16, bins=16, spec_frames=16, audio_patch=[2, 2], channels=8,
                                channel_mult=[1, 2], temporal_attn_levels=[1], audio_tail=1))

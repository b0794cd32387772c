"""PyAV codec: encode/decode round trips, frame-rate and size resampling, odd sizes, one-frame and corrupt files."""

import av
import pytest
import torch

from cm_media.errors import UserError
from modalities.video.codec import VideoCodec, VideoCodecConfig
from modalities.video.io import VideoWriter, probe, read_clip, write_video


def smooth_clip(frames=12, h=32, w=32, channels=1):
    """A drifting sine pattern [C, T, H, W] in [0.1, 0.9]: smooth, so lossy codecs keep it close."""
    t = torch.arange(frames)[:, None, None]
    y = torch.arange(h)[None, :, None]
    x = torch.arange(w)[None, None, :]
    clip = 0.5 + 0.4 * torch.sin((x + 2 * t) / 4.0) * torch.cos(y / 5.0)
    return clip.float()[None].repeat(channels, 1, 1, 1)


def stream_facts(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        return n, float(s.average_rate), s.codec_context.name, s.codec_context.pix_fmt, s.codec_context.height, s.codec_context.width


@pytest.mark.parametrize("suffix,codec_name,mean_err", [(".mp4", "h264", 0.012), (".webm", "vp9", 0.012), (".gif", "gif", 0.01)])
def test_round_trip(tmp_path, suffix, codec_name, mean_err):
    clip = smooth_clip()
    path = write_video(tmp_path / f"clip{suffix}", clip, fps=10)
    n, fps, name, pix_fmt, h, w = stream_facts(path)
    assert (n, fps, name, h, w) == (12, 10.0, codec_name, 32, 32)
    if suffix != ".gif":
        assert pix_fmt == "yuv420p"
    info = probe(path)
    assert (info.height, info.width, info.fps) == (32, 32, 10.0) and info.duration == pytest.approx(1.2, abs=0.05)
    back = read_clip(path, 10, 12, (32, 32), 1).float() / 255
    assert back.shape == (1, 12, 32, 32)
    err = (back - clip).abs()
    assert err.mean() < mean_err and err.max() < 0.1


def test_fps_resampling_and_start(tmp_path):
    # frame k has brightness k/15, so the decoded brightness tells which source frame was shown
    clip = (torch.arange(16).float() / 15)[None, :, None, None].expand(1, 16, 16, 16)
    path = write_video(tmp_path / "ramp.mp4", clip, fps=8)
    level = lambda c: (c.float().mean((0, 2, 3)) / 255 * 15).round().long().tolist()  # noqa: E731
    assert level(read_clip(path, 4, 8, (16, 16))) == list(range(0, 16, 2))  # half the rate: every other frame
    assert level(read_clip(path, 16, 8, (16, 16))) == [0, 0, 1, 1, 2, 2, 3, 3]  # double: each frame twice
    assert level(read_clip(path, 8, 4, (16, 16), start=1.0)) == [8, 9, 10, 11]
    assert level(read_clip(path, 8, 20, (16, 16)))[-5:] == [15] * 5  # past the end: the last frame holds


def test_odd_sizes_are_padded_to_even(tmp_path):
    clip = smooth_clip(frames=5, h=17, w=33, channels=3)
    path = write_video(tmp_path / "odd.mp4", clip, fps=6)
    n, fps, _, pix_fmt, h, w = stream_facts(path)
    assert (n, fps, pix_fmt, h, w) == (5, 6.0, "yuv420p", 18, 34)
    back = read_clip(path, 6, 5, (18, 34), 3).float() / 255
    assert (back[:, :, :17, :33] - clip).abs().mean() < 0.03
    assert torch.allclose(back[:, :, 17], back[:, :, 16], atol=0.08)  # the extra row repeats the edge
    # reading at an odd model size works too
    assert read_clip(path, 6, 5, (17, 33), 3).shape == (3, 5, 17, 33)


def test_one_frame_video_reads_as_still_clip(tmp_path):
    frame = smooth_clip(frames=1)
    path = write_video(tmp_path / "one.mp4", frame, fps=8)
    assert stream_facts(path)[0] == 1
    codec = VideoCodec(VideoCodecConfig(size=32, frames=6, fps=8, channels=1))
    clip = codec.read(path)  # [C, T, H, W]
    assert clip.shape == (1, 6, 32, 32)
    assert (clip - frame).abs().mean() < 0.012
    assert torch.equal(clip[:, 0], clip[:, 5])


def test_aspect_is_kept_by_cropping_the_centre(tmp_path):
    clip = torch.zeros(1, 2, 16, 48)
    clip[..., 16:32] = 1.0  # a bright square in the middle third
    path = write_video(tmp_path / "wide.mp4", clip, fps=8)
    out = read_clip(path, 8, 2, (8, 8), 1).float() / 255
    assert out.mean() > 0.9  # the centre square fills the square output


def test_corrupt_and_empty_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(UserError, match="bad.mp4"):
        read_clip(bad, 8, 4, (8, 8))
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty.webm"):
        probe(empty)
    good = write_video(tmp_path / "good.mp4", smooth_clip(), fps=8).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="cut.mp4"):
        read_clip(tmp_path / "cut.mp4", 8, 4, (8, 8))


def test_writer_rejects_unknown_suffix_and_streams_frames(tmp_path):
    with pytest.raises(UserError, match="x.avi"):
        VideoWriter(tmp_path / "x.avi", 8, 8, 8)
    with VideoWriter(tmp_path / "s.mp4", 12, 8, 8, channels=1) as w:
        for k in range(7):
            w.write((torch.full((8, 8, 1), k * 30)).to(torch.uint8).numpy())
    assert stream_facts(tmp_path / "s.mp4")[:2] == (7, 12.0)


def test_codec_config_checks_and_transform():
    with pytest.raises(UserError, match="codec.channels"):
        VideoCodec(VideoCodecConfig(channels=2))
    with pytest.raises(UserError, match="codec.size"):
        VideoCodec(VideoCodecConfig(size=[8]))
    codec = VideoCodec(VideoCodecConfig(size=[8, 12]))
    assert codec.size == (8, 12) and codec.dims == 3
    x = torch.rand(2, 1, 3, 8, 12)
    assert torch.allclose(codec.decode(codec.encode(x)), x, atol=1e-6)

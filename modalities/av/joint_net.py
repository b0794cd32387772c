"""The joint sounding-video backbone: a video tower and an audio tower that exchange information at every level.

x [B, 1, D] is the flat model tensor of codec.py: grey pixels [B, 1, T, H, W] and the compressed STFT
[B, 2, F, frames] of the soundtrack. The video tower is the factorized space-time UNet's block (per-frame 2D
residual block, temporal conv, temporal attention) on 4x4 pixel patches, keeping every frame; the audio tower is
a 2D UNet on 4x2 (frequency x frames) patches that halves frequency and time per level. After every block the
two streams trade summaries at the video's frame rate (the audio frames are pooled to it and the video summary
repeated back to them): the video sends each frame's features pooled to a 4x4 grid (where the digit is, so the
audio knows when it meets a wall), the audio sends each frame's features pooled to 4 frequency bands (when and
at what pitch a note sounds). Both transfers start at zero, so with `exchange: false` the towers are independent:
the no-sync baseline. With `stream_noise` each tower is also told both streams' noise levels, so one stream can be
given clean (at sigma_min) and the other generated from it: sound for a silent clip, motion for a soundtrack.
With `keypoints` K > 0 the audio tower of the `keypoint_levels` also reads K soft-argmax positions of the digit per
frame, interpolated to its own frame times (keypoints.py): the pooled summary times a note only to a frame or two.
With `audio_tail` N > 0 the audio tower goes on for N more residual blocks after both towers are done, each first
reading the keypoints of the video tower's final features (those its output head draws): the sound is shaped
after the motion is settled, in the same evaluation (the cascade "motion, then sound for it" inside one pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cm_media.nn.embedding import NoiseEmbedding
from cm_media.nn.layers import (
    Downsample,
    GroupNorm,
    ResBlock,
    conv_nd,
    norm_groups,
    patchify,
    sinusoidal_embedding,
    unpatchify,
    zero_module,
)
from cm_media.nn.registry import register_arch
from cm_media.nn.spacetime import SpaceTimeBlock, SpaceTimeUNetConfig

from .codec import AVLayout, pack_model, split_model
from .keypoints import KeypointExchange, frame_to_audio_times


@dataclass
class JointNetConfig:
    """Tower widths and depths; `frames`, `size`, `bins`, `spec_frames` must match the codec (the modality checks)."""

    dims: int = 1
    in_channels: int = 1
    frames: int = 16
    size: int = 64
    bins: int = 256
    spec_frames: int = 128
    video_patch: int = 4  # p x p pixel patches folded into channels
    audio_patch: list = field(default_factory=lambda: [4, 2])  # (frequency, frames)
    channels: int = 32
    channel_mult: list = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 1
    temporal_attn_levels: list = field(default_factory=lambda: [1, 2])
    num_heads: int = 4
    exchange: bool = True
    video_grid: int = 4  # the video summary: features pooled to grid x grid cells per frame
    audio_bands: int = 4  # the audio summary: features pooled to this many frequency bands per frame
    dropout: float = 0.0
    attention_backend: str = "sdpa"
    # per-stream noise levels (cm_media/math/streams.py): c_noise [B, 2] (video, audio), each tower embedding its
    # own level plus the other's through a zero-initialized map (so shared levels start as the plain network)
    stream_noise: bool = False
    # keypoints.py: K soft-argmax positions per frame, interpolated to the audio frames of these levels (0: off)
    keypoints: int = 0
    keypoint_levels: list = field(default_factory=lambda: [0, 1])
    keypoint_hidden: int = 64
    # audio blocks after both towers, each reading the keypoints of the final video features (0: off)
    audio_tail: int = 0
    cond: list = field(default_factory=list)


class Exchange(nn.Module):
    """Video [B, Cv, T, h, w] and audio [B, Ca, F, Ta] features add each other's per-frame summary (Ta = k T)."""

    def __init__(self, cv: int, ca: int, grid: int, bands: int):
        super().__init__()
        self.grid, self.bands = grid, bands
        self.v_norm, self.a_norm = GroupNorm(norm_groups(cv), cv), GroupNorm(norm_groups(ca), ca)
        self.to_audio = zero_module(nn.Conv1d(cv * grid * grid, ca, 3, padding=1))
        self.to_video = zero_module(nn.Conv1d(ca * bands, cv, 3, padding=1))

    def forward(self, hv: torch.Tensor, ha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, cv, t, h, w = hv.shape
        ta = ha.shape[-1]
        sv = F.adaptive_avg_pool3d(F.silu(self.v_norm(hv)), (t, self.grid, self.grid))  # [B, Cv, T, g, g]
        sv = sv.permute(0, 1, 3, 4, 2).reshape(b, -1, t)  # [B, Cv*g*g, T]
        sa = F.adaptive_avg_pool2d(F.silu(self.a_norm(ha)), (self.bands, t))  # [B, Ca, bands, T]
        sa = sa.reshape(b, -1, t)  # [B, Ca*bands, T]
        hv = hv + self.to_video(sa)[..., None, None]  # [B, Cv, T, 1, 1]
        ha = ha + self.to_audio(sv).repeat_interleave(ta // t, dim=-1)[:, :, None]  # [B, Ca, 1, Ta]
        return hv, ha


def _check(cfg: JointNetConfig) -> None:
    """The shapes the two towers can take: the flat tensor, sizes that halve evenly at every level, audio frames
    that line up with video frames at the deepest level."""
    if cfg.in_channels != 1 or cfg.dims != 1:
        raise ValueError("arch av_joint takes the flat sounding-video tensor [B, 1, D] of modality av")
    vp, (fp, tp) = cfg.video_patch, cfg.audio_patch
    scale = 2 ** (len(cfg.channel_mult) - 1)
    if cfg.size % (vp * scale) or cfg.bins % (fp * scale) or cfg.spec_frames % (tp * scale):
        raise ValueError(f"size {cfg.size}, bins {cfg.bins} and spec_frames {cfg.spec_frames} must be multiples "
                         f"of their patch times 2^(levels-1) = {scale}")
    if cfg.audio_tail and not cfg.keypoints:
        raise ValueError("backbone.audio_tail reads the digit's keypoints: set backbone.keypoints > 0")
    if (cfg.spec_frames // (tp * scale)) % cfg.frames:
        raise ValueError(f"the audio tower's deepest level has {cfg.spec_frames // (tp * scale)} frames, not a "
                         f"multiple of the {cfg.frames} video frames: use a smaller audio_patch or fewer levels")


class JointNet(nn.Module):
    """F(x [B, 1, D], c_noise [B] (or [B, 2] per stream with `stream_noise`), cond) -> [B, 1, D]: two UNets
    (video, audio) joined by Exchange at every block."""

    def __init__(self, cfg: JointNetConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        self.layout = AVLayout(cfg.frames, cfg.size, round(cfg.spec_frames), cfg.bins, cfg.spec_frames)
        levels = len(cfg.channel_mult)
        vp, (fp, tp) = cfg.video_patch, cfg.audio_patch
        ch = cfg.channels
        emb_dim = 4 * ch
        self.embed = NoiseEmbedding(ch, emb_dim, cfg.cond)
        if cfg.stream_noise:
            self.stream_sizes = [self.layout.video_numel, self.layout.audio_numel]
            self.complex_streams = [False, True]  # the soundtrack is a complex STFT [2, F, frames]
            self.video_hears, self.audio_sees = zero_module(nn.Linear(ch, ch)), zero_module(nn.Linear(ch, ch))
        st = SpaceTimeUNetConfig(num_heads=cfg.num_heads, max_frames=max(128, cfg.frames), dropout=cfg.dropout,
                                 attention_backend=cfg.attention_backend)
        self.v_in = conv_nd(3, vp * vp, ch, 3, padding=1)
        self.a_in = conv_nd(2, 2 * fp * tp, ch, 3, padding=1)

        def vblock(i, o, level):
            return SpaceTimeBlock(i, o, emb_dim, st, level in cfg.temporal_attn_levels, False)

        def ablock(i, o):
            return ResBlock(2, i, o, emb_dim, cfg.dropout, 3)

        xchg = self._exchanges

        self.down, skips, cur = nn.ModuleList(), [ch], ch
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(nn.ModuleList([vblock(cur, ch * mult, level), ablock(cur, ch * mult), *xchg(ch * mult, level)]))
                cur = ch * mult
                skips.append(cur)
            if level < levels - 1:
                self.down.append(nn.ModuleList([Downsample(3, cur, (1, 2, 2)), Downsample(2, cur, (2, 2))]))
                skips.append(cur)
        self.mid = nn.ModuleList([vblock(cur, cur, levels), ablock(cur, cur), *xchg(cur, levels)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for j in range(cfg.num_res_blocks + 1):
                skip = skips.pop()
                self.up.append(nn.ModuleList([vblock(cur + skip, ch * mult, level), ablock(cur + skip, ch * mult),
                                              *xchg(ch * mult, level)]))
                cur = ch * mult
                if level > 0 and j == cfg.num_res_blocks:
                    self.up.append(nn.ModuleList([conv_nd(3, cur, cur, 3, padding=1), conv_nd(2, cur, cur, 3, padding=1)]))

        # the audio tail: zero-initialized like every residual branch, so a trained model gains it unchanged
        tail_times = frame_to_audio_times(cfg.frames, cfg.spec_frames // tp, cfg.spec_frames)
        self.tail = nn.ModuleList([nn.ModuleList([KeypointExchange(cur, cur, cfg.keypoints, cfg.keypoint_hidden,
                                                                   tail_times), ablock(cur, cur)])
                                   for _ in range(cfg.audio_tail)])

        def head(dims, out):
            return nn.Sequential(GroupNorm(norm_groups(cur), cur), nn.SiLU(), zero_module(conv_nd(dims, cur, out, 3, padding=1)))

        self.v_out, self.a_out = head(3, vp * vp), head(2, 2 * fp * tp)

    def _exchanges(self, c: int, level: int) -> list:
        """What joins the towers after a block at `level`: the Exchange (None without it), and the keypoint
        reader where `keypoint_levels` names the level."""
        cfg, tp = self.cfg, self.cfg.audio_patch[1]
        found = [Exchange(c, c, cfg.video_grid, cfg.audio_bands) if cfg.exchange else None]
        if cfg.keypoints and level in cfg.keypoint_levels:
            audio_frames = cfg.spec_frames // (tp * 2 ** level)
            found.append(KeypointExchange(c, c, cfg.keypoints, cfg.keypoint_hidden,
                                          frame_to_audio_times(cfg.frames, audio_frames, cfg.spec_frames)))
        return found

    def _block(self, blocks, hv, ha, emb_v, emb_a):
        vb, ab, x, *kp = blocks
        hv, ha = vb(hv, emb_v), ab(ha, emb_a)
        if kp:  # the digit's positions, read before the Exchange mixes the streams
            ha = kp[0](hv, ha)
        return x(hv, ha) if x is not None else (hv, ha)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        cfg = self.cfg
        v, a = split_model(x, self.layout)  # [B, 1, T, H, W], [B, 2, F, frames]
        if not cfg.stream_noise:
            emb_v = emb_a = self.embed(c_noise, cond)
        else:  # each tower: its own noise level, plus the other stream's (clean = generate from it)
            c_v, c_a = (c_noise, c_noise) if c_noise.ndim == 1 else c_noise.unbind(1)  # [B] each
            emb_v = self.embed(c_v, cond, self.video_hears(sinusoidal_embedding(c_a, cfg.channels)))
            emb_a = self.embed(c_a, cond, self.audio_sees(sinusoidal_embedding(c_v, cfg.channels)))
        hv = self.v_in(patchify(v, [1, cfg.video_patch, cfg.video_patch]))  # [B, C, T, H/p, W/p]
        ha = self.a_in(patchify(a, list(cfg.audio_patch)))  # [B, C, F/fp, frames/tp]
        hs = [(hv, ha)]
        for blocks in self.down:
            if len(blocks) == 2:  # downsampling
                hv, ha = blocks[0](hv), blocks[1](ha)
            else:
                hv, ha = self._block(blocks, hv, ha, emb_v, emb_a)
            hs.append((hv, ha))
        hv, ha = self._block(self.mid, hv, ha, emb_v, emb_a)
        for blocks in self.up:
            if len(blocks) == 2:  # upsampling: nearest 2x over space (video) or frequency and frames (audio)
                hv = blocks[0](F.interpolate(hv, scale_factor=(1, 2, 2), mode="nearest"))
                ha = blocks[1](F.interpolate(ha, scale_factor=2, mode="nearest"))
                continue
            sv, sa = hs.pop()
            hv, ha = self._block(blocks, torch.cat([hv, sv], 1), torch.cat([ha, sa], 1), emb_v, emb_a)
        for kp, block in self.tail:  # the motion is settled: the sound reads where the digit is drawn
            ha = block(kp(hv, ha), emb_a)
        v_out = unpatchify(self.v_out(hv), [1, cfg.video_patch, cfg.video_patch])
        a_out = unpatchify(self.a_out(ha), list(cfg.audio_patch))
        return pack_model(v_out, a_out)  # [B, 1, D]


register_arch("av_joint", JointNetConfig, JointNet)

"""Named backbone presets for video [B, C, T, H, W] (`dims`/`in_channels` come from the codec).

`spacetime_unet` presets factorize space and time (per-frame 2D convs, temporal convs and attention);
the `conv3d-*` presets are the core UNet with full 3x3x3 convolutions, kept for comparison.
Every UNet preset downsamples height and width only (down_stride [1, 2, 2]), so any clip length works.
The `dit-video-*` presets are patch transformers (cm_media/nn/transformer.py) on spatiotemporal tubelets with
factorized attention (across time, then within each frame); their sin-cos positions fit any clip length too.
"""

PRESETS: dict[str, dict] = {
    # for tests: a few thousand parameters
    "tiny": {"arch": "spacetime_unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
             "temporal_attn_levels": [1], "num_heads": 2},
    "conv3d-tiny": {"arch": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                    "down_stride": [1, 2, 2], "num_heads": 2},
    # 16 frames of 32x32 moving digits on a 2-core CPU: 2x2 patches, so the top level runs at 16x16
    "moving-digits-small": {"arch": "spacetime_unet", "channels": 32, "channel_mult": [1, 2, 2],
                            "num_res_blocks": 1, "patch_size": 2, "temporal_attn_levels": [1, 2]},
    # factorized, without patches: full-resolution top level (about 2x the time of moving-digits-small)
    "moving-digits-full": {"arch": "spacetime_unet", "channels": 16, "channel_mult": [1, 2, 4],
                           "num_res_blocks": 1, "temporal_attn_levels": [1, 2]},
    # moving-digits-full's widths with full 3x3x3 convolutions, for comparison
    "conv3d-small": {"arch": "unet", "channels": 16, "channel_mult": [1, 2, 4], "num_res_blocks": 1,
                     "down_stride": [1, 2, 2], "attn_levels": [2]},
    # 64x64 clips on a CPU, the same network two ways: on 16x16 latents of a 4x codec (4 or 8 channels), and on
    # pixels folded into 4x4 patches (pixel unshuffle: 16 or 48 channels at 16x16); top level 16x16, levels 16/8/4
    "latent-small": {"arch": "spacetime_unet", "channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1,
                     "temporal_attn_levels": [1, 2]},
    "pixel64-small": {"arch": "spacetime_unet", "channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1,
                      "patch_size": 4, "temporal_attn_levels": [1, 2]},
    # 16x16 latents on a GPU
    "latent-base": {"arch": "spacetime_unet", "channels": 96, "channel_mult": [1, 2, 2], "num_res_blocks": 2,
                    "temporal_attn_levels": [0, 1, 2], "spatial_attn_levels": [1, 2]},
    # 64x64 clips on a GPU
    "small": {"arch": "spacetime_unet", "channels": 64, "channel_mult": [1, 2, 2, 4], "num_res_blocks": 2,
              "temporal_attn_levels": [1, 2, 3], "spatial_attn_levels": [3]},
    "base": {"arch": "spacetime_unet", "channels": 128, "channel_mult": [1, 2, 2, 4], "num_res_blocks": 2,
             "temporal_attn_levels": [1, 2, 3], "spatial_attn_levels": [2, 3]},
    # patch transformers with divided space-time attention on 2x4x4 tubelets: 16 frames of 32x32 give a grid of
    # 8 x 8 x 8 tokens (attention over 8 times, then over 64 positions); dit-tiny widths, about the forward cost
    # of moving-digits-small on this CPU (batch 16, fp32, one thread: 0.6 s vs 0.8 s, measured under load)
    "dit-video-small": {"arch": "dit", "size": "dit-tiny", "patch_size": [2, 4, 4], "attention": "factorized"},
    # 64x64 clips on a GPU: DiT-S and DiT-B widths, 16 x 16 tokens per frame
    "dit-video-s": {"arch": "dit", "size": "dit-s", "patch_size": [2, 4, 4], "attention": "factorized"},
    "dit-video-b": {"arch": "dit", "size": "dit-b", "patch_size": [2, 4, 4], "attention": "factorized"},
}

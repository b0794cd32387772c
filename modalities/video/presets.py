"""Named backbone presets for video [B, C, T, H, W] (`dims`/`in_channels` come from the codec).

`spacetime_unet` presets factorize space and time (per-frame 2D convs, temporal convs and attention);
the `conv3d-*` presets are the core UNet with full 3x3x3 convolutions, kept for comparison.
Every preset downsamples height and width only (down_stride [1, 2, 2]), so any clip length works.
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
    # 64x64 clips on a GPU
    "small": {"arch": "spacetime_unet", "channels": 64, "channel_mult": [1, 2, 2, 4], "num_res_blocks": 2,
              "temporal_attn_levels": [1, 2, 3], "spatial_attn_levels": [3]},
    "base": {"arch": "spacetime_unet", "channels": 128, "channel_mult": [1, 2, 2, 4], "num_res_blocks": 2,
             "temporal_attn_levels": [1, 2, 3], "spatial_attn_levels": [2, 3]},
}

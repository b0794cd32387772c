"""Named backbone presets for images (UNet arguments; `dims`/`in_channels` come from the codec)."""

PRESETS: dict[str, dict] = {
    # for tests: a few thousand parameters
    "tiny": {"channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1},
    # 8x8 digits on a 2-core CPU
    "digits-small": {"channels": 48, "channel_mult": [1, 2], "num_res_blocks": 2},
    # 16-32 px images
    "small": {"channels": 64, "channel_mult": [1, 2, 2], "num_res_blocks": 2, "attn_levels": [2]},
    "base": {"channels": 128, "channel_mult": [1, 2, 2, 2], "num_res_blocks": 2, "attn_levels": [2, 3]},
}

"""Named backbone presets for images (UNet arguments; `dims`/`in_channels` come from the codec)."""

PRESETS: dict[str, dict] = {
    # for tests: a few thousand parameters
    "tiny": {"channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1},
    # 8x8 digits on a 2-core CPU
    "digits-small": {"channels": 48, "channel_mult": [1, 2], "num_res_blocks": 2},
    # 16-32 px images
    "small": {"channels": 64, "channel_mult": [1, 2, 2], "num_res_blocks": 2, "attn_levels": [2]},
    "base": {"channels": 128, "channel_mult": [1, 2, 2, 2], "num_res_blocks": 2, "attn_levels": [2, 3]},
    # patch transformers (cm_media/nn/transformer.py SIZES): 2x2 patches, 16 tokens on 8x8 digits
    "dit-digits": {"arch": "dit", "size": "dit-tiny", "patch_size": 2},
    "dit-s": {"arch": "dit", "size": "dit-s", "patch_size": 2},
    "dit-b": {"arch": "dit", "size": "dit-b", "patch_size": 2},
}

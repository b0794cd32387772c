"""Named backbone presets for sounding video (modalities/av/joint_net.py, arch av_joint)."""

PRESETS: dict[str, dict] = {
    # for tests: a few tens of thousands of parameters
    "tiny": {"arch": "av_joint", "channels": 8, "channel_mult": [1, 2], "temporal_attn_levels": [1]},
    # 64x64 x 16 frames + 2 s of 16 kHz audio on a 2-core CPU: video on 4x4 pixel patches at 16x16 / 8x8 / 4x4,
    # audio on 8x2 (frequency x frames) patches at 32x64 / 16x32 / 8x16, 24 channels, 2.5 M parameters. At 32
    # channels one step made 22 clips/s per thread (measured beside another job), at 24 channels 29
    "joint-small": {"arch": "av_joint", "channels": 24, "channel_mult": [1, 2, 2], "audio_patch": [8, 2]},
    # the same towers without the exchange: the unsynchronized baseline
    "separate-small": {"arch": "av_joint", "channels": 24, "channel_mult": [1, 2, 2], "audio_patch": [8, 2],
                       "exchange": False},
    # for a GPU
    "joint-base": {"arch": "av_joint", "channels": 64, "channel_mult": [1, 2, 2], "num_res_blocks": 2,
                   "audio_patch": [4, 2]},
}

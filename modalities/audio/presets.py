"""Named backbone presets for audio (UNet arguments; `dims`/`in_channels` come from the representation).

Waveform presets are 1D with stride-4 levels and dilated residual blocks, so a few levels see hundreds of
milliseconds; spectrogram presets are 2D over (frequency, frames).
"""

PRESETS: dict[str, dict] = {
    # for tests: a few thousand parameters, any representation
    "tiny": {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1},
    # waveforms on a 2-core CPU: 4 levels of stride 4 (64x) that double the width as they go down, so each
    # level costs about the same; kernel 5 with dilations 1/3/9 gives a receptive field of about 0.5 s at 8 kHz
    "wave-small": {"channels": 16, "channel_mult": [1, 2, 4, 8], "num_res_blocks": 2, "down_stride": 4,
                   "kernel_size": 5, "dilations": [1, 3, 9]},
    # compressed STFT or log-mel (frequency x frames) on a 2-core CPU, same width-doubling layout
    "spec-small": {"channels": 16, "channel_mult": [1, 2, 4, 8], "num_res_blocks": 2},
    # larger models for a GPU
    "wave-base": {"channels": 64, "channel_mult": [1, 2, 2, 4, 4], "num_res_blocks": 2, "down_stride": 4,
                  "kernel_size": 5, "dilations": [1, 3, 9], "attn_levels": [4]},
    "spec-base": {"channels": 96, "channel_mult": [1, 2, 2, 4], "num_res_blocks": 2, "attn_levels": [3]},
}

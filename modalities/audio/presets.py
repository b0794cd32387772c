"""Named backbone presets for audio (UNet arguments; `dims`/`in_channels` come from the representation).

Waveform presets are 1D stride-4 UNets with dilated residual blocks (`wave-fast` folds 16-sample patches first);
spectrogram presets are 2D over (frequency, frames); `dit-*` presets are patch transformers.
"""

PRESETS: dict[str, dict] = {
    # for tests: a few thousand parameters, any representation
    "tiny": {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1},
    # waveforms on a 2-core CPU: 4 levels of stride 4 (64x) that double the width as they go down, so each
    # level costs about the same; kernel 5 with dilations 1/3/9 gives a receptive field of about 0.5 s at 8 kHz
    "wave-small": {"channels": 16, "channel_mult": [1, 2, 4, 8], "num_res_blocks": 2, "down_stride": 4,
                   "kernel_size": 5, "dilations": [1, 3, 9]},
    # the same reach at 1/16 of the sample rate: 16-sample patches folded into channels (space-to-depth), then
    # 3 levels of stride 4; about 10x faster than wave-small (~580x real time one-step at 8 kHz, bf16, 2 cores)
    # but after 1000 iCT steps its one-step clips were still unpitched (3% stable pitch), so it is not the default
    "wave-fast": {"channels": 48, "channel_mult": [1, 2, 4], "num_res_blocks": 2, "down_stride": 4,
                  "kernel_size": 3, "dilations": [1, 3, 9], "patch": 16},
    # waveforms seen through an STFT (modalities/audio/stft_unet.py): spec-fast's 2D UNet on the compressed complex
    # STFT of the noisy waveform, a linear complex STFT out and iSTFT back; the model tensor stays the waveform
    "wave-stft": {"arch": "stft_unet", "channels": 16, "channel_mult": [1, 2, 4, 8], "num_res_blocks": 1,
                  "n_fft": 256, "hop": 128},
    # compressed STFT or log-mel (frequency x frames) on a 2-core CPU, same width-doubling layout
    "spec-small": {"channels": 16, "channel_mult": [1, 2, 4, 8], "num_res_blocks": 2},
    # the same with one residual block per level: 1.45x faster (209x real time one-step with bf16 and
    # channels_last on 2 idle cores, vs 149x), one-step stable pitch 78% vs 88% after the shipped config's run
    "spec-fast": {"channels": 16, "channel_mult": [1, 2, 4, 8], "num_res_blocks": 1},
    # the bundled model's backbone: 2x2 (frequency x frames) patches folded into channels, then three levels at 32
    # channels: same parameter count as spec-fast at about half its one-step time (338x vs 208x real time, bf16 +
    # channels_last, 2 cores); needs more training than a CPU run gives (configs/audio/tones_spectrogram_gpu_ict.yaml)
    "spec-patch": {"channels": 32, "channel_mult": [1, 2, 4], "num_res_blocks": 1, "patch": [2, 2]},
    # 16 kHz, 1 s (spoken_digits, notes): the compressed STFT with n_fft 512 / hop 250 is 256 bins x 65 frames;
    # 4x2 (frequency x frames) patches folded into channels, then three levels at 32 channels. About twice as fast
    # as spec-patch's 2x2 patches there (which miss 200x real time at 16 kHz on 2 cores)
    "spec-16k": {"channels": 32, "channel_mult": [1, 2, 4], "num_res_blocks": 1, "patch": [4, 2]},
    # the same UNet with one or two more input channels (modalities/audio/spec_unet.py): each bin's frequency and,
    # for a `pitch` condition, the requested note's harmonic comb. The bundled words and notes models' backbone
    # (with plain spec-16k the notes were at the wrong pitch after 750 steps: 3% within half a semitone)
    "spec-16k-freq": {"arch": "spec_unet", "channels": 32, "channel_mult": [1, 2, 4], "num_res_blocks": 1,
                      "patch": [4, 2], "sample_rate": 16000, "n_fft": 512},
    # the same network seeing a 16 kHz waveform through the same STFT (stft_unet): the comparison's other arm
    "wave-stft-16k": {"arch": "stft_unet", "channels": 32, "channel_mult": [1, 2, 4], "num_res_blocks": 1,
                      "patch": [4, 2], "n_fft": 512, "hop": 250},
    # larger models for a GPU
    "wave-base": {"channels": 64, "channel_mult": [1, 2, 2, 4, 4], "num_res_blocks": 2, "down_stride": 4,
                  "kernel_size": 5, "dilations": [1, 3, 9], "attn_levels": [4]},
    "spec-base": {"channels": 96, "channel_mult": [1, 2, 2, 4], "num_res_blocks": 2, "attn_levels": [3]},
    # patch transformers (cm_media/nn/transformer.py SIZES) for a 2-core CPU; sin-cos positions fit any clip length.
    # waveform: 32-sample 1D patches (4 ms at 8 kHz; 128 tokens per 0.512 s clip)
    "dit-wave-small": {"arch": "dit", "size": "dit-tiny", "patch_size": 32},
    # compressed STFT / log-mel: 4x4 (frequency x frames) patches, 32 x 8 = 256 tokens for the tones spectrogram
    "dit-spec-small": {"arch": "dit", "size": "dit-tiny", "patch_size": [4, 4]},
}

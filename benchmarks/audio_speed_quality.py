"""README audio table: tones waveform iCT (shipped config, full and brief) at 1/2/4 steps vs real data and noise.

    python benchmarks/audio_speed_quality.py [--train-steps N] [--brief-steps 100] [--extra RUN ...]

Records carry the real-time factor (generation seconds per second of audio) next to the quality metrics.
"""

from _common import parser, run

if __name__ == "__main__":
    run("audio", "tones_waveform_ict.yaml", parser(__doc__.splitlines()[0], brief_steps=100).parse_args())

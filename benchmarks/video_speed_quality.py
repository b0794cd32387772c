"""README video table: moving-digits iCT (shipped config, full and brief) at 1/2/4 steps vs real data and noise.

    python benchmarks/video_speed_quality.py [--train-steps N] [--brief-steps 300] [--num-samples 128]

Records carry frames per second next to the quality metrics (per-frame appearance + motion features).
"""

from _common import parser, run

if __name__ == "__main__":
    run("video", "moving_digits_ict.yaml", parser(__doc__.splitlines()[0], brief_steps=300).parse_args())

"""README image table: digits iCT (shipped config, full and brief) at 1/2/4 steps vs real data and noise.

    python benchmarks/image_speed_quality.py [--train-steps N] [--brief-steps 300] [--extra runs/digits_edm]

Pass an EDM run (configs/experiments/image/digits_edm.yaml) with --extra to add the Heun teacher at --teacher-steps.
"""

from _common import parser, run

if __name__ == "__main__":
    run("image", "digits_ict.yaml", parser(__doc__.splitlines()[0], brief_steps=300).parse_args())

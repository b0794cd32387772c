"""Peak memory of `cm-media generate -n N` against `-n 64`, per modality (issue 17: memory must not grow with -n).

Each run is a fresh process (`python -m cm_media.cli generate ...` wrapped so it reports its own peak resident
memory, ru_maxrss); samples stream batch by batch into the writer, so the peak should not depend on N.

    OMP_NUM_THREADS=1 python benchmarks/memory_bounded.py --n 100000 --modalities image,audio,video

Outputs: image a streamed grid PNG, audio numbered .wav files in a folder, video one .mp4 per clip (--separate).
Writes a Markdown table to stdout (and --markdown FILE); the files go to a temporary folder that is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import json, resource, sys, time
from cm_media.cli import main
t0 = time.perf_counter()
code = main(sys.argv[1:])
print("RESULT " + json.dumps({"code": code, "seconds": time.perf_counter() - t0,
                              "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def target(modality: str, folder: Path) -> list[str]:
    if modality == "image":
        return ["--out", str(folder / "grid.png")]
    if modality == "audio":
        return ["--out", str(folder / "clips")]
    return ["--out", str(folder / "clips.mp4"), "--separate"]


def measure(modality: str, n: int, extra: list[str]) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"cm-mem-{modality}-"))
    try:
        argv = ["generate", modality, "-n", str(n), *target(modality, folder), *extra]
        done = subprocess.run([sys.executable, "-c", CHILD, *argv], cwd=ROOT, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if done.returncode != 0 or line is None:
            raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
        result = json.loads(line[7:])
        written = sum(1 for _ in folder.rglob("*") if _.is_file())
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        return {"modality": modality, "n": n, **result, "files": written, "bytes": size}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000, help="the large -n (compared with -n 64)")
    p.add_argument("--modalities", default="image,audio,video")
    p.add_argument("--extra", default="", help="extra generate options, e.g. '--batch-size 64'")
    p.add_argument("--markdown", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows = []
    for modality in args.modalities.split(","):
        small = measure(modality, 64, args.extra.split())
        t0 = time.perf_counter()
        large = measure(modality, args.n, args.extra.split())
        large["wall_s"] = time.perf_counter() - t0
        rows.append((small, large))
        print(f"{modality}: -n 64 peak {small['peak_mib']:.0f} MiB; -n {args.n} peak {large['peak_mib']:.0f} MiB "
              f"(x{large['peak_mib'] / small['peak_mib']:.2f}) in {large['seconds']:.0f} s, {large['files']} files",
              file=sys.stderr, flush=True)
    lines = ["| modality | output | peak MiB, -n 64 | peak MiB, -n N | N | ratio | time for N | files, size |",
             "|---|---|---|---|---|---|---|---|"]
    kinds = {"image": "grid PNG (streamed)", "audio": "folder of .wav", "video": "--separate .mp4 per clip"}
    for small, large in rows:
        lines.append(f"| {small['modality']} | {kinds[small['modality']]} | {small['peak_mib']:.0f} | "
                     f"{large['peak_mib']:.0f} | {large['n']} | {large['peak_mib'] / small['peak_mib']:.2f} | "
                     f"{large['seconds']:.0f} s | {large['files']}, {large['bytes'] / 2**20:.0f} MiB |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps([r for pair in rows for r in pair], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Zero-shot editing, measured: a 0.25 s gap infilled in a real recording, and the middle frames of a video.

    python benchmarks/edit_demos.py audio RUN --recording FILE [--gap 1.0] [--window 1.5]
    python benchmarks/edit_demos.py video RUN [--keep 4]

For the audio demo of benchmarks/README.md (a model that never heard the gap):
    python benchmarks/edit_demos.py audio - --recording FILE --gap 1.0 --prepare-folder runs/speech_gap_data
    cm-media train benchmarks/speech_gap.yaml --out runs/speech_gap
    python benchmarks/edit_demos.py audio runs/speech_gap --recording FILE --start 0.5 --window 1.25 --gap 1.0

Both use the core's masked multistep sampler (`Generator.edit`): the kept region is re-imposed after every
step, so it must come back unchanged; the masked region is regenerated so it joins what surrounds it.
"Plausible" is measured against the truth that was cut out, beside simple fills a user might try instead:
  audio: log-mel distance of the gap to the original (dB, lower is better) and loudness match, against
         silence, noise at the surrounding loudness, and a copy of the 0.25 s before the gap;
  video: per-pixel MSE of the regenerated frames to the true ones, the mean frame-to-frame change, and the
         Frechet distance of the whole clips to other held-out clips on the video features (does it move like
         real video?), against a linear cross-fade between the last kept frame before and the first after
         (ghosting, low MSE) and holding the last kept frame (no motion); the model runs from noise and from
         the cross-fade noised to --init-sigma (SDEdit), which keeps the fade's layout and removes its ghosts, and
         with reconstruction guidance (--guidance, Ho et al. 2022) from noise and along --refine-sigmas from the
         cross-fade, which keeps the regenerated digits the ones in the kept frames.
Writes wav / mp4 / png files and a Markdown + JSON summary under --out (benchmarks/results/edit_demos/edit_<modality>).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cm_media
from cm_media.eval.bench import BenchOptions, data_items, media_quality, reference_for

ROOT = Path(__file__).resolve().parent.parent


def logmel_db(wave: torch.Tensor, rate: int) -> torch.Tensor:
    """[T] -> [mels, frames] log-mel power in dB (32 ms windows)."""
    import torchaudio

    n_fft = 256 if rate <= 8000 else 512
    mel = torchaudio.transforms.MelSpectrogram(rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=40)
    return 10 * torch.log10(mel(wave.float()) + 1e-8)


def gap_scores(fill: torch.Tensor, truth: torch.Tensor, rate: int) -> dict:
    """Log-mel L1 distance (dB) and RMS ratio of a gap's content [T] against the true content."""
    d = (logmel_db(fill, rate) - logmel_db(truth, rate)).abs().mean().item()
    ratio = (fill.pow(2).mean().sqrt() / truth.pow(2).mean().sqrt().clamp_min(1e-9)).item()
    return {"logmel_l1_db": d, "rms_ratio": ratio}


def prepare_folder(args) -> None:
    """Write the recording without the gap (and `--margin` around it) as two wav files at the model rate, a
    training folder for a model that has never heard the cut-out part (`data.dataset: folder`)."""
    import soundfile as sf
    import torchaudio

    wav, rate = sf.read(args.recording, dtype="float32", always_2d=True)  # [T, C]
    mono = torch.from_numpy(wav.mean(1))
    mono = torchaudio.functional.resample(mono, rate, args.rate)
    a = int((args.gap - args.margin) * args.rate)
    b = int((args.gap + args.gap_len + args.margin) * args.rate)
    out = Path(args.prepare_folder)
    out.mkdir(parents=True, exist_ok=True)
    sf.write(out / "before_gap.wav", mono[:a].numpy(), args.rate)
    sf.write(out / "after_gap.wav", mono[b:].numpy(), args.rate)
    print(f"wrote {out}/before_gap.wav ({a / args.rate:.2f} s) and after_gap.wav ({(len(mono) - b) / args.rate:.2f} s)")


def audio_demo(args) -> dict:
    gen = cm_media.load(args.run)
    rate = gen.cfg.codec.sample_rate
    full = gen.modality.read(args.recording, gen.cfg, gen.codec)  # [1, C, T] at the model's rate and level
    start = int(round(args.start * rate))
    media = full[..., start:start + int(round(args.window * rate))]
    a, b = args.gap - args.start, args.gap - args.start + args.gap_len
    model_shape = tuple(gen.codec.encode(media).shape)
    mask = gen.modality.edit_mask(f"{a}:{b}", model_shape, gen.cfg)
    i0, i1 = int(round(a * rate)), int(round(b * rate))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    truth = media[0].mean(0)  # [T]
    rows, fills = [], {}
    for seed in range(args.seeds):
        edited = gen.edit(media, mask, steps=args.steps, seed=seed)[..., :media.shape[-1]]  # [1, C, T]
        fills[f"infill seed {seed}"] = edited[0].mean(0)
        if seed == 0:
            gen.save(edited, out / "infilled.wav")
    # a spectrogram model keeps its unmasked STFT frames exactly; in samples, the windows that overlap the gap
    # (one n_fft on each side) are shared, so the check leaves that margin out (0 for waveform models)
    margin = 0 if gen.cfg.codec.representation == "waveform" else gen.cfg.codec.n_fft
    kept = torch.ones(media.shape[-1], dtype=torch.bool)
    kept[max(0, i0 - margin):i1 + margin] = False
    edited0 = fills["infill seed 0"]
    kept_err = (edited0[kept] - truth[kept]).abs().max().item()
    g = torch.Generator().manual_seed(0)
    around = torch.cat([truth[max(0, i0 - (i1 - i0)):i0], truth[i1:i1 + (i1 - i0)]])
    fills["silence"] = truth.clone()
    fills["silence"][i0:i1] = 0
    fills["noise at surrounding loudness"] = truth.clone()
    fills["noise at surrounding loudness"][i0:i1] = torch.randn(i1 - i0, generator=g) * around.pow(2).mean().sqrt()
    fills["copy of the previous 0.25 s"] = truth.clone()
    fills["copy of the previous 0.25 s"][i0:i1] = truth[i0 - (i1 - i0):i0]
    for name, wave in fills.items():
        rows.append({"fill": name, **gap_scores(wave[i0:i1], truth[i0:i1], rate)})
    gapped = media.clone()
    gapped[..., i0:i1] = 0
    gen.save(media, out / "original.wav")
    gen.save(gapped, out / "gap.wav")
    _spectrogram_png(out / "infill.png", rate, [("original", truth), ("gap", gapped[0].mean(0)),
                                                 ("infilled (seed 0)", edited0)], (a, b))
    return {"modality": "audio", "run": str(args.run), "recording": str(args.recording), "gap_s": [args.gap, args.gap + args.gap_len],
            "steps": args.steps, "kept_max_abs_diff": kept_err, "kept_margin_samples": margin, "rows": rows,
            "files": ["original.wav", "gap.wav", "infilled.wav", "infill.png"]}


def _spectrogram_png(path: Path, rate: int, waves: list, gap: tuple[float, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(waves), 1, figsize=(8, 2.2 * len(waves)), sharex=True)
    for ax, (name, w) in zip(axes, waves):
        spec = logmel_db(w, rate).numpy()
        ax.imshow(spec, origin="lower", aspect="auto", extent=(0, len(w) / rate, 0, spec.shape[0]), vmin=spec.max() - 80)
        ax.axvline(gap[0], color="w", lw=0.8, ls="--")
        ax.axvline(gap[1], color="w", lw=0.8, ls="--")
        ax.set_ylabel(name, fontsize=8)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def video_demo(args) -> dict:
    gen = cm_media.load(args.run)
    clips = gen.codec.decode(data_items(gen, "eval", args.clips, seed=3).float())  # [N, C, T, H, W] held out
    frames = clips.shape[2]
    middle = list(range(args.keep, frames - args.keep))
    mask = gen.modality.edit_mask(",".join(map(str, middle)), tuple(gen.codec.encode(clips[:1]).shape), gen.cfg)
    full_mask = mask.expand(len(clips), *mask.shape[1:])
    edited = gen.edit(clips, full_mask, steps=args.steps, seed=0)
    guided = gen.edit(clips, full_mask, steps=args.steps, seed=0, guidance=args.guidance)
    crossfade = gen.modality.edit_guess(clips, mask, gen.cfg)  # linear fade between the kept frames around
    refined = gen.edit(clips, full_mask, seed=0, init=crossfade, sigmas=[args.init_sigma])  # SDEdit from the fade
    levels = [float(v) for v in args.refine_sigmas.split(",")]
    best = gen.edit(clips, full_mask, seed=0, init=crossfade, sigmas=levels, guidance=args.guidance)
    kept = [t for t in range(frames) if t not in middle]
    kept_err = max((e[:, :, kept] - clips[:, :, kept]).abs().max().item() for e in (edited, guided, refined, best))
    truth = clips[:, :, middle]
    first, last = clips[:, :, args.keep - 1:args.keep], clips[:, :, frames - args.keep:frames - args.keep + 1]
    fills = {f"model from noise ({args.steps} steps)": edited[:, :, middle],
             f"model from noise ({args.steps} steps), guidance {args.guidance:g}": guided[:, :, middle],
             f"model from the cross-fade (1 step at sigma {args.init_sigma:g})": refined[:, :, middle],
             f"model from the cross-fade (sigmas {args.refine_sigmas}), guidance {args.guidance:g}": best[:, :, middle],
             "linear cross-fade": crossfade[:, :, middle], "hold last kept frame": first.expand_as(truth)}
    fills["truth"] = truth
    ref = reference_for(gen, BenchOptions(), 64)  # other held-out clips: what real motion looks like

    def whole(v):  # the clip with its middle frames replaced
        c = clips.clone()
        c[:, :, middle] = v
        return c

    rows = [{"fill": k, "mse": (v - truth).pow(2).mean().item(),
             "mean_abs_frame_diff": torch.cat([first, v, last], 2).diff(dim=2).abs().mean().item(),
             "fd_to_real_clips": media_quality(gen, ref, whole(v))["fd"]}
            for k, v in fills.items()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = min(4, len(clips))
    gen.save(torch.cat([clips[:n], edited[:n], best[:n], crossfade[:n]]), out / "interpolation.mp4")
    return {"modality": "video", "run": str(args.run), "clips": len(clips), "kept_frames": kept,
            "regenerated_frames": middle, "steps": args.steps, "kept_max_abs_diff": kept_err, "rows": rows,
            "files": ["interpolation.mp4", "interpolation_frames.png"],
            "layout": f"rows 1-{n}: truth, {n + 1}-{2 * n}: model from noise, {2 * n + 1}-{3 * n}: model from the "
                      f"cross-fade with guidance, {3 * n + 1}-{4 * n}: cross-fade"}


def to_markdown(res: dict) -> str:
    keys = [k for k in res["rows"][0] if k != "fill"]
    lines = [f"# Zero-shot {res['modality']} editing with {res['run']} ({res['steps']} steps)", "",
             f"Kept region, max |edited - original|: {res['kept_max_abs_diff']:.2e}", "",
             "| fill | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += ["| " + r["fill"] + " | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |" for r in res["rows"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modality", choices=["audio", "video"])
    ap.add_argument("run")
    ap.add_argument("--recording", help="audio: a real recording to cut the gap into")
    ap.add_argument("--start", type=float, default=0.0, help="audio: window start in the recording (s)")
    ap.add_argument("--window", type=float, default=1.5, help="audio: window length (s)")
    ap.add_argument("--gap", type=float, default=0.6, help="audio: gap start in the recording (s)")
    ap.add_argument("--gap-len", type=float, default=0.25)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--keep", type=int, default=4, help="video: frames kept at each end")
    ap.add_argument("--clips", type=int, default=64, help="video: held-out clips to score")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--init-sigma", type=float, default=2.0, help="video: noise level the cross-fade is refined from")
    ap.add_argument("--refine-sigmas", default="3,3,2,2,1,1,0.5",
                    help="video: noise levels of the guided refinement of the cross-fade")
    ap.add_argument("--guidance", type=float, default=8.0, help="video: reconstruction guidance weight")
    ap.add_argument("--out", default=None)
    ap.add_argument("--prepare-folder", default=None, metavar="DIR",
                    help="audio: only write the recording minus the gap (+- --margin) to DIR, for training")
    ap.add_argument("--margin", type=float, default=0.05)
    ap.add_argument("--rate", type=int, default=8000)
    args = ap.parse_args()
    if args.prepare_folder:
        prepare_folder(args)
        return
    args.out = args.out or str(ROOT / "benchmarks" / "results" / "edit_demos" / f"edit_{args.modality}")
    if args.modality == "audio" and not args.recording:
        ap.error("audio needs --recording FILE")
    res = audio_demo(args) if args.modality == "audio" else video_demo(args)
    Path(args.out, "summary.json").write_text(json.dumps(res, indent=1))
    Path(args.out, "summary.md").write_text(to_markdown(res))
    print(to_markdown(res))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

"""GPU check, sized for a few minutes on one H100/H200: per modality, one-step generation and training-step
throughput in bf16 and float32, for each attention backend that runs, with model FLOP utilisation; and for every
bundled model (issue 19) its one-step generation as `cm-media generate` runs it (bf16, channels-last, both
decodes, the learned video codec's included) at a large batch, with the audio real-time factor and video frames/s.

    python benchmarks/gpu_check.py [--device cuda] [--batch 256] [--repeats 10] [--json out.json]
    python benchmarks/gpu_check.py --bundled [--models spoken-digits,moving-mnist] [--batch 256] [--json out.json]

Untrained models from the shipped configs are enough for the first: speed does not depend on the weights. FLOPs
come from torch.utils.flop_counter on one forward; MFU = achieved FLOP/s / the device's dense bf16 peak. A training
step of a bundled model is timed as an iCT step on its backbone whatever method trained it (a distilled model's
teacher is not shipped), so its MFU counts ~4 forwards (forward + backward + the target's no-grad forward).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from cm_media.methods import build_method
from cm_media.nn.attention import resolve_backend
from cm_media.runs.config import load_config
from cm_media.runs.model import build_model

CONFIGS = {
    "image": "configs/image/digits_ict.yaml",
    "image-dit": "configs/experiments/image/digits_dit_ict.yaml",
    "audio-waveform": "configs/experiments/audio/tones_waveform_ict.yaml",
    "audio-spectrogram": "configs/audio/tones_spectrogram_ict.yaml",
    "video": "configs/video/moving_digits_ict.yaml",
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense tensor-core FLOP/s


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def timed(fn, device, repeats: int) -> float:
    """Median seconds of fn() after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def forward_flops(model, x, sigma) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, sigma)
    return counter.get_total_flops()


def check(name: str, path: str, device, batch: int, repeats: int, backends: list[str]) -> list[dict]:
    cfg = load_config(path, [f"train.batch_size={batch}"])
    rows = []
    for backend in backends:
        cfg.backbone["attention_backend"] = backend
        modality, codec, model = build_model(cfg)
        model.to(device)
        shape = modality.sample_shape(cfg, codec)
        x = torch.randn(batch, *shape, device=device)
        sigma = torch.full((batch,), cfg.method.sigma_max, device=device)
        flops = forward_flops(model, x, sigma)
        peak = peak_flops(device)
        ran = resolve_backend(backend, device.type)
        for bf16 in (False, True):
            amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)
            model.eval()

            def gen():
                with torch.no_grad(), amp:
                    codec.decode(model(x, sigma).float())

            t_gen = timed(gen, device, repeats)
            model.train()
            method = build_method(cfg.method, model, 10_000)
            opt = torch.optim.RAdam(model.parameters(), lr=1e-4)
            g = torch.Generator().manual_seed(0)

            def step():
                with amp:
                    loss = method.loss(model, x, 0, g).float().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            t_train = timed(step, device, repeats)
            # one iCT step = online forward + backward (~3 forwards) + a no-grad target forward
            row = {
                "model": name, "backend": ran, "bf16": bf16, "batch": batch, "shape": list(shape),
                "onestep_samples_per_s": float(f"{batch / t_gen:.4g}"), "onestep_ms": round(1000 * t_gen, 2),
                "train_steps_per_s": round(1 / t_train, 2), "train_samples_per_s": round(batch / t_train, 1),
                "gflops_per_forward": round(flops / 1e9, 2),
            }
            if peak:
                row["mfu_onestep"] = round(flops / t_gen / peak, 4)
                row["mfu_train"] = round(4 * flops / t_train / peak, 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
        if ran != backend and backend != "auto":
            print(f"{name}: backend {backend} not available, {ran} ran")
    return rows


def media_rates(cfg, media_shape: tuple, batch: int, seconds: float) -> dict:
    """What one batch of one-step samples per `seconds` is worth in media: audio seconds per second (real-time
    factor) and video frames per second; media_shape is one decoded batch's ([B, C, N] audio samples)."""
    c, out = cfg.codec, {}
    if cfg.modality in ("audio", "av"):
        clip_s = c.frames / c.fps if cfg.modality == "av" else media_shape[-1] / c.sample_rate
        out["audio_real_time_factor"] = float(f"{batch * clip_s / seconds:.4g}")
    if cfg.modality in ("video", "av"):
        out["frames_per_s"] = float(f"{batch * c.frames / seconds:.4g}")
    return out


def check_bundled(name: str, device, batch: int, repeats: int) -> list[dict]:
    """One bundled model: one-step generation through Generator.sample + decode (the CLI's path) in bf16, and an
    iCT training step of its backbone in bf16, at `batch` (float32 on a CPU without native bf16, where
    `cm-media` itself runs float32: emulated bf16 is 6-20x slower there)."""
    import copy

    import cm_media
    from cm_media.methods.consistency_training import ICTConfig
    from cm_media.runs.precision import bf16_is_fast

    gen = cm_media.load(name, device=str(device))
    bf16 = bf16_is_fast(device)
    cfg, shape = gen.cfg, gen.shape()
    x = torch.randn(batch, *shape, device=device)  # [B, C, *axes]
    sigma = torch.full((batch,), cfg.method.sigma_max, device=device)
    cond = gen.batch_conditions(None, batch, seed=0)(0, batch)  # a class per sample where the model has classes
    cond_dev = {k: v.to(device) for k, v in cond.items()} or None
    flops = forward_flops(lambda a, b: gen.model(a, b, cond_dev), x, sigma)
    peak = peak_flops(device)

    media_shape = []

    def sample():
        with torch.no_grad():
            media = gen.decode(gen.sample(x, 1, bf16=bf16, cond=cond), bf16=bf16)
        media_shape[:] = media.shape

    t_gen = timed(sample, device, repeats)
    model = copy.deepcopy(gen.model).float().train().requires_grad_(True)
    m = cfg.method
    method = build_method(ICTConfig(sigma_min=m.sigma_min, sigma_max=m.sigma_max, sigma_data=m.sigma_data), model,
                          10_000)
    opt = torch.optim.RAdam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = method.loss(model, x, 0, g, cond_dev).float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_train = timed(step, device, repeats)
    row = {"model": name, "bundled": True, "bf16": bf16, "batch": batch, "shape": list(shape),
           "onestep_samples_per_s": float(f"{batch / t_gen:.4g}"), "onestep_ms": round(1000 * t_gen, 2),
           **media_rates(cfg, tuple(media_shape), batch, t_gen), "train_steps_per_s": round(1 / t_train, 2),
           "train_samples_per_s": round(batch / t_train, 1), "gflops_per_forward": round(flops / 1e9, 2)}
    if peak:
        row["mfu_onestep_with_decode"] = round(flops / t_gen / peak, 4)
        row["mfu_train"] = round(4 * flops / t_train / peak, 4)
    print(json.dumps(row), flush=True)
    return [row]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--models", default=None, help="subset of " + ",".join(CONFIGS) + " (with --bundled: of the "
                    "bundled models' names; default all)")
    ap.add_argument("--bundled", action="store_true", help="the bundled models, as cm-media generate runs them")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    backends = ["sdpa"] + (["xformers"] if resolve_backend("xformers", device.type) == "xformers" else [])
    rows = []
    if args.models:
        names = args.models.split(",")
    elif args.bundled:
        from cm_media.registry import bundled_models

        names = list(bundled_models())
    else:
        names = list(CONFIGS)
    for name in names:
        try:
            if args.bundled:
                rows += check_bundled(name, device, args.batch, args.repeats)
                continue
            rows += check(name, CONFIGS[name], device, args.batch, args.repeats, backends)
        except Exception as exc:  # keep going: one modality's failure should not hide the others' numbers
            print(f"{name}: failed: {type(exc).__name__}: {exc}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

"""`cm-media export`: a trained run -> a small, self-describing model folder (what ships as a bundled model).

The folder holds `model.safetensors` (only the EMA weights, under their `ema.` prefix so `cm_media.load(DIR)`
reads it like a checkpoint, optionally stored in bf16, with the run config as metadata), `config.yaml` (the
same config) and `README.md` (source run, step, parameter count, size and the exact training command).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex
import time
from pathlib import Path

import torch
import yaml

from cm_media import files
from cm_media.errors import UserError
from cm_media.math.kinds import kind_of
from cm_media.registry import bundled_models, get_modality
from cm_media.runs import checkpoint as ckpt
from cm_media.runs.codec_swap import swap_codec
from cm_media.runs.config import apply_overrides, config_from_dict
from cm_media.runs.loader import checked_config, load_codec_state, resolve_source
from cm_media.runs.model import assemble, with_resolved_backbone

DTYPES = {"bf16": torch.bfloat16, "float32": torch.float32}


@dataclasses.dataclass
class Exported:
    folder: Path
    model: Path
    step: int | None
    params: int
    size_bytes: int
    command: str


def _weights(tensors: dict[str, torch.Tensor], path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """('ema' or 'model', the un-prefixed weights) of a checkpoint: EMA when it has one."""
    for prefix in ("ema", "model"):
        state = ckpt.prefixed(tensors, prefix)
        if state:
            return prefix, state
    raise UserError(f"{path} holds no model weights (no ema.* or model.* tensors)")


def default_command(out: Path, run_dir: Path | None) -> str:
    """A command that retrains the model: `cm-media train` on the run's full config, copied beside the export."""
    run = f"runs/{run_dir.name}" if run_dir is not None else "runs/retrained"
    return f"cm-media train {shlex.quote((Path(out) / 'config.yaml').as_posix())} --out {shlex.quote(run)}"


def export(source: str | Path, out: str | Path, dtype: str = "bf16", command: str | None = None,
           overrides: list[str] | None = None, new_codec: str | None = None) -> Exported:
    """Write OUT/model.safetensors, OUT/config.yaml and OUT/README.md from a run directory or checkpoint file.

    `overrides` are `sample.key=value` generation defaults to change, or a codec key the modality lists in
    `decode_keys` (it changes the decode only); weights-shaping sections cannot change;
    `new_codec` replaces a latent model's codec by one sharing its encoder (codec_swap.py).
    """
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    src = Path(source)
    if not src.exists():
        raise UserError(f"run or checkpoint not found: {source}")
    if src.is_file() and src.suffix != ".safetensors":
        raise UserError(f"not a checkpoint file (expected .safetensors): {source}")
    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out must be a folder, but {out} is a file")
    path = resolve_source(src)
    checked_config(path)  # the file's claims (config, sizes) before its tensors are loaded
    tensors, meta = ckpt.load_checkpoint(path)
    decode_keys = {f"codec.{k}" for k in get_modality(meta["config"]["modality"]).decode_keys}
    for text in overrides or []:
        key = text.split("=", 1)[0].strip()
        if not key.startswith("sample.") and key not in decode_keys:
            allowed = "sample.*" + "".join(f", {k}" for k in sorted(decode_keys))
            raise UserError(f"export --set only changes generation defaults ({allowed}), got {text!r}")
    raw = apply_overrides(dict(meta["config"]), overrides or [])
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    if new_codec is not None:
        raw, tensors = swap_codec(raw, tensors, new_codec, get_modality(raw.get("modality")))
    cfg = config_from_dict(raw)
    files.output_folder(out)  # before any work: a path under a file, an unwritable folder or a full disk
    preset = cfg.backbone.get("preset")
    # store the preset's resolved arguments (as runs do), so later preset edits cannot break the export
    modality = get_modality(cfg.modality)
    cfg = with_resolved_backbone(cfg, modality)
    prefix, state = _weights(tensors, path)
    parts = assemble(cfg, modality)
    codec, model = parts.codec, parts.model
    try:
        model.load_state_dict(state)  # the export must load; this also rejects a config/weights mismatch
    except RuntimeError as exc:
        raise UserError(f"checkpoint {path} does not match its config: {str(exc).splitlines()[0]}") from None
    params = sum(p.numel() for p in model.parameters())
    load_codec_state(codec, tensors, path)  # a learned codec ships inside the export
    codec_tensors = ckpt.with_prefix(codec.state_dict(), "codec") if isinstance(codec, torch.nn.Module) else {}

    target = DTYPES[dtype]
    weights = {k: v.to(target) if v.is_floating_point() else v for k, v in state.items()}
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out must be a folder, but {out} is a file")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    step = meta.get("step")
    command = command or meta.get("command") or default_command(out, run_dir)
    new_meta = {
        "config": cfg.to_dict(), "step": step, "weights": prefix, "dtype": dtype, "command": command,
        "backbone_name": meta.get("backbone_name") or preset or cfg.backbone.get("arch"),
        "exported_from": meta.get("exported_from") or str(run_dir or path),
        "sample_overrides": list(meta.get("sample_overrides") or []) + list(overrides or []),
        "codec_swaps": list(meta.get("codec_swaps") or []) + ([str(new_codec)] if new_codec is not None else []),
        "exported_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    model_path = out / "model.safetensors"
    with files.writing(model_path):
        ckpt.save_checkpoint(model_path, {**ckpt.with_prefix(weights, "ema"), **codec_tensors}, new_meta)
    config_text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    with files.writing(out / "config.yaml"):
        ckpt.atomic_write_bytes(out / "config.yaml", config_text.encode())
    size = model_path.stat().st_size
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    shape = modality.sample_shape(cfg, codec)
    readme = _readme(cfg, new_meta, params, size, digest, path, out, shape, kind_of(model.kind).generates)
    with files.writing(out / "README.md"):
        ckpt.atomic_write_bytes(out / "README.md", readme.encode())
    return Exported(out, model_path, step, params, size, command)


def _use_name(out: Path) -> str:
    """What `generate` and `load` take for an export in `out`: its bundled name when `out` is a bundled model's folder
    (e.g. "notes", not the modality "audio"), else the folder itself."""
    for name, (_, folder) in bundled_models().items():
        if folder.resolve() == Path(out).resolve():
            return name
    return Path(out).as_posix()


def _readme(cfg, meta: dict, params: int, size: int, digest: str, checkpoint: Path, out: Path,
            sample_shape: tuple[int, ...], generates: bool = True) -> str:
    m = cfg.modality
    use = _use_name(out)
    shape = "x".join(str(v) for v in sample_shape)
    backbone = meta.get("backbone_name") or cfg.backbone.get("arch") or "custom"
    what = (f"A consistency model (method `{cfg.method.name}`)" if generates else
            f"A learned codec (method `{cfg.method.name}`: a latent model names it in `codec.path`)")
    lines = [
        f"# Bundled {m} {'model' if generates else 'codec'}",
        "",
        (f"{what} of the `{cfg.data.dataset}` {m} data "
         f"(model tensor {shape}, backbone `{backbone}`), exported by `cm-media export`."),
        "",
        "| | |",
        "|---|---|",
        f"| source run | `{meta['exported_from']}` |",
        f"| checkpoint | `{checkpoint.name}` (step {meta['step']}, {meta['weights']} weights) |",
        f"| parameters | {params:,} |",
        f"| stored as | {meta['dtype']}; loaded as float32 |",
        f"| file size | {size / 2**20:.2f} MiB (`model.safetensors`, sha256 `{digest[:16]}...`) |",
        (f"| generation defaults | {cfg.sample.steps} step(s), bf16 autocast {'on' if cfg.sample.bf16 else 'off'}, "
         f"batch {cfg.sample.batch_size} |"),
        f"| exported | {meta['exported_at']} |",
        *([f"| codec | `{cfg.codec.path}`, swapped in by `export --codec` (same encoder: the model's latents "
           "are unchanged) |"] if meta.get("codec_swaps") else []),
        "",
        "Train it again (the same config and seed; from the repository root unless the command says otherwise):",
        "",
        "```bash",
        meta["command"],
        "```",
        "",
        "Export the finished run into this folder (source run as above):",
        "",
        "```bash",
        f"cm-media export {shlex.quote(meta['exported_from'])} --out {shlex.quote(out.as_posix())} --dtype {meta['dtype']}"
        + "".join(f" --set {shlex.quote(o)}" for o in meta["sample_overrides"])
        + "".join(f" --codec {shlex.quote(c)}" for c in meta.get("codec_swaps") or [])
        + f" --command {shlex.quote(meta['command'])}",
        "```",
        "",
        (f"Use it: `cm-media generate {use}` or `cm_media.load(\"{use}\")`. `config.yaml` here "
         "is the run config "
         "that is also stored in the file's metadata." if generates else
         "Use it: `codec.path` in a latent model's config names this folder. `config.yaml` here is the run config "
         "that is also stored in the file's metadata."),
        "",
    ]
    return "\n".join(lines)


def main(args) -> int:
    result = export(args.source, args.out, dtype=args.dtype, command=args.train_command, overrides=args.overrides,
                    new_codec=args.codec)
    print(f"exported step {result.step} ({result.params:,} parameters, {args.dtype}) -> {result.model} "
          f"({result.size_bytes / 2**20:.2f} MiB), with config.yaml and README.md")
    return 0

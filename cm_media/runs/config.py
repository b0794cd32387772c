"""Run configuration: YAML with sections modality, data, codec, backbone, method, train, sample.

`--set section.key=value` overrides are applied before validation; unknown keys are user errors.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cm_media import checks
from cm_media.errors import UserError
from cm_media.methods import METHODS, MethodConfig
from cm_media.nn.registry import count_backbone_parameters
from cm_media.registry import get_modality
from cm_media.runs import codec_runs

log = logging.getLogger(__name__)
SECTIONS = ("modality", "data", "codec", "backbone", "method", "train", "sample")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping for `cm-media train`."""

    steps: int = 10000
    batch_size: int = 64
    lr: float = 2e-4
    optimizer: str = "radam"  # radam | adamw
    weight_decay: float = 0.0
    warmup_steps: int = 200
    lr_decay: str = "none"  # none | cosine | linear: from train.lr after the warmup down to lr_min at train.steps
    lr_min: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # evaluation EMA of the weights
    # autocast the backbone in bfloat16: true, false, or auto (bf16 where the device computes it fast, float32 on
    # a CPU without native bf16, where a bf16 step is many times slower: runs/precision.py)
    bf16: bool | str = False
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 50
    seed: int = 0
    max_bad_steps: int = 20  # non-finite losses tolerated before stopping
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads for torch (0: torch's default); 1 is far faster on a CPU shared with other jobs
    samples: int = 64  # grid size written at the end
    cond_dropout: float = 0.0  # share of samples trained with no condition (classifier-free guidance needs ~0.1)
    # share of samples trained without each one condition, drawn per condition (the others kept): what guidance of
    # one condition alone (`sample.guide`) needs, e.g. the instrument of a note with its pitch held
    cond_dropout_each: float = 0.0
    # fine-tuning: start from the EMA weights of a run, checkpoint or bundled model (a module the source lacks,
    # e.g. a newly added zero-initialized one, keeps its fresh initialization; every other weight must fit)
    init_from: str = ""
    # video: train on a random window of this many frames cut from each clip (0: whole clips). 1 trains the
    # per-frame layers on single frames, each from another clip: a cheap first stage for what a frame shows
    clip_frames: int = 0


@dataclass
class SampleConfig:
    """Generation defaults; `sigmas` maps a step count to its noise levels, e.g. {2: [80, 0.8]}."""

    steps: int = 1
    sigmas: dict = field(default_factory=dict)
    bf16: bool = False
    batch_size: int = 64
    sampler: str = "heun"  # EDM models: heun (2N - 1 evaluations) or euler (N)
    channels_last: bool = False  # channels-last memory layout for 2D / 3D conv backbones
    compile: bool = False  # torch.compile the backbone (first call pays the compile time)
    cfg_scale: float | None = None  # default classifier-free guidance scale of a conditional model (1: unguided)
    # the conditions guidance pushes towards (empty: all): the unguided evaluation drops only these, the others stay
    # given in both (a model trained with train.cond_dropout_each has seen them apart)
    guide: list = field(default_factory=list)


@dataclass
class RunConfig:
    modality: str
    data: Any
    codec: Any
    backbone: dict
    method: MethodConfig
    train: TrainConfig
    sample: SampleConfig

    def to_dict(self) -> dict:
        return {
            "modality": self.modality,
            "data": dataclasses.asdict(self.data),
            "codec": dataclasses.asdict(self.codec),
            "backbone": dict(self.backbone),
            "method": dataclasses.asdict(self.method),
            "train": dataclasses.asdict(self.train),
            "sample": dataclasses.asdict(self.sample),
        }


def _check_type(value, tp, key: str):
    """Light type check of a config value against a dataclass field annotation."""
    if isinstance(tp, str):
        tp = eval(tp, vars(typing) | {"types": types})  # annotations are strings under `from __future__`
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _check_type(value, arg, key)
            except UserError as exc:
                errors.append(exc)
        raise errors[0]
    if tp is Any:
        return value
    check = _CHECKS.get(origin or tp)
    return value if check is None else check(value, tp, key)


def _as_none(value, tp, key):
    if value is None:
        return None
    raise UserError(f"config key {key} must be null, got {value!r}")


def _as_bool(value, tp, key):
    if isinstance(value, bool):
        return value
    raise UserError(f"config key {key} must be true or false, got {value!r}")


def _from_string(value, tp):
    """YAML 1.1 reads 1e-3 (no dot) as a string: the number it spells, else the string."""
    if isinstance(value, str):
        try:
            return int(value) if tp is int else float(value)
        except ValueError:
            pass
    return value


def _as_int(value, tp, key):
    value = _from_string(value, int)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > checks.MAX_INT:
            raise UserError(f"config key {key} must be an integer of at most 63 bits, got {value}")
        return value
    raise UserError(f"config key {key} must be an integer, got {value!r}")


def _as_float(value, tp, key):
    value = _from_string(value, float)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise UserError(f"config key {key} must be a finite number, got {value!r}")
        return number
    raise UserError(f"config key {key} must be a number, got {value!r}")


def _as_str(value, tp, key):
    if isinstance(value, str):
        return value
    raise UserError(f"config key {key} must be a string, got {value!r}")


def _as_list(value, tp, key):
    if isinstance(value, (list, tuple)):
        return list(value)
    raise UserError(f"config key {key} must be a list, got {value!r}")


def _as_dict(value, tp, key):
    if isinstance(value, dict):
        return value
    raise UserError(f"config key {key} must be a mapping, got {value!r}")


_CHECKS = {type(None): _as_none, bool: _as_bool, int: _as_int, float: _as_float, str: _as_str, list: _as_list,
           tuple: _as_list, dict: _as_dict}


def from_dict(cls, data: dict | None, section: str):
    """Build dataclass `cls` from a mapping; unknown keys and wrong types are UserErrors naming `section.key`."""
    data = data or {}
    if not isinstance(data, dict):
        raise UserError(f"config section {section} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise UserError(f"unknown config key {section}.{key}")
        kwargs[key] = _check_type(value, fields[key].type, f"{section}.{key}")
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.steps=100' -> (['train', 'steps'], 100); values are parsed as YAML scalars."""
    if "=" not in text:
        raise UserError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts) or parts[0] not in SECTIONS:
        raise UserError(f"unknown config key {key.strip()!r} in --set (sections: {', '.join(SECTIONS)})")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set each `section.key=value` into the raw config mapping (nested keys allowed)."""
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise UserError(f"config key {'.'.join(parts)} is not inside a mapping")
        node[parts[-1]] = value
    return raw


def config_from_dict(raw: dict) -> RunConfig:
    """Validate a raw mapping into a RunConfig (the modality decides the data and codec fields)."""
    if not isinstance(raw, dict):
        raise UserError("config must be a YAML mapping with sections " + ", ".join(SECTIONS))
    for key in raw:
        if key not in SECTIONS:
            raise UserError(f"unknown config section {key!r} (known: {', '.join(SECTIONS)})")
    if "modality" not in raw:
        raise UserError("config has no 'modality' (image, audio or video)")
    modality = get_modality(str(raw["modality"]))
    backbone = raw.get("backbone") or {}
    if not isinstance(backbone, dict):
        raise UserError("config section backbone must be a mapping")
    cfg = RunConfig(
        modality=str(raw["modality"]),
        data=from_dict(modality.DataConfig, raw.get("data"), "data"),
        codec=from_dict(modality.CodecConfig, raw.get("codec"), "codec"),
        backbone=dict(backbone),
        method=method_from_dict(raw.get("method"), modality.default_methods),
        train=from_dict(TrainConfig, raw.get("train"), "train"),
        sample=from_dict(SampleConfig, raw.get("sample"), "sample"),
    )
    validate(cfg)
    return cfg


def method_from_dict(section: dict | None, defaults: dict[str, str] | None = None) -> MethodConfig:
    """The `method` section as the named method's own config dataclass.

    A section without `name` takes the modality's default (`defaults`, `Modality.default_methods`: "from_teacher"
    when it names `teacher`, else "from_data"; iCT without defaults). Configs stored by older versions list every
    method's keys; a key of another method at that method's default is dropped; another method's key is dropped
    with a note (a key of no method stays an error)."""
    section = dict(section or {})
    defaults = defaults or {}
    if "name" not in section:
        section["name"] = defaults.get("from_teacher" if section.get("teacher") else "from_data", "ict")
    name = section["name"]
    if name not in METHODS:
        raise UserError(f"unknown method.name {name!r} (known: {', '.join(sorted(METHODS))})")
    cls = METHODS[name].Config
    own = {f.name for f in dataclasses.fields(cls)}
    for key in [k for k in section if k not in own]:
        owners = [m for m, c in METHODS.items() if key in {f.name: f for f in dataclasses.fields(c.Config)}]
        defaults = [_default(METHODS[m].Config, key) for m in owners]
        if owners and all(section[key] == d for d in defaults):
            del section[key]
        elif owners:  # e.g. an ict config trained as edm with --set method.name=edm: say what goes unused
            log.warning("note: method.%s=%r applies to method(s) %s, not %s: ignored", key, section[key],
                        ", ".join(owners), name)
            del section[key]
    return from_dict(cls, section, "method")


def _default(cls, key: str):
    f = next(f for f in dataclasses.fields(cls) if f.name == key)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


# range checks of method keys by name (every method's config shares the schedule constants; the others apply
# where a method has that key); finiteness of every number is checked when the config is read
_METHOD_RANGES = {
    "sigma_data": dict(lo=0, lo_open=True),
    "rho": dict(lo=0, lo_open=True),
    "p_std": dict(lo=0, lo_open=True),
    "edm_p_std": dict(lo=0, lo_open=True),
    "huber_c": dict(lo=0, lo_open=True),
    "mu0": dict(lo=0, hi=1, hi_open=True),
    "ect_q": dict(lo=0, lo_open=True),
    "fd_eps": dict(lo=0, lo_open=True),
    "adaptive_c": dict(lo=0, lo_open=True),
    "guidance_scale": dict(lo=0),
}
_METHOD_INTS = {"s0": 1, "s1": 1, "num_scales": 2, "stage_steps": 1, "solver_steps": 1, "mid_steps": 1}


def validate(cfg: RunConfig) -> None:
    """Ranges and cross-field checks, before anything is built: a bad value is one error naming its key."""
    _validate_train(cfg.train)
    _validate_method(cfg.method)
    _validate_sample(cfg.sample, cfg.method)
    modality = get_modality(cfg.modality)
    codec_runs.record_latent_codec(cfg, modality)  # a learned codec's config, read from its codec run once
    hook = getattr(modality, "validate_config", None)
    if hook is not None:
        hook(cfg)  # data and codec ranges, in the modality's terms
    n = cfg.train.clip_frames
    if n and not modality.frame_axis:  # the sounding-video codec has codec.frames, but packs them flat
        raise UserError(f"train.clip_frames {n} needs clips of at least that many frames ({cfg.modality} model "
                        "tensors have no frame axis: this data has no frames to cut)")
    if n and n > cfg.codec.frames:
        raise UserError(f"train.clip_frames {n} needs clips of at least that many frames (codec.frames is "
                        f"{cfg.codec.frames})")
    check_network_size(cfg)


def _validate_train(t) -> None:
    checks.integer(t.steps, "train.steps", 1, 10**12)
    checks.integer(t.batch_size, "train.batch_size", 1, checks.MAX_BATCH)
    checks.number(t.lr, "train.lr", 0, lo_open=True)
    if t.optimizer not in ("radam", "adamw"):
        raise UserError(f"unknown train.optimizer {t.optimizer!r} (radam or adamw)")
    checks.number(t.weight_decay, "train.weight_decay", 0)
    checks.integer(t.warmup_steps, "train.warmup_steps", 0)
    if t.lr_decay not in ("none", "cosine", "linear"):
        raise UserError(f"unknown train.lr_decay {t.lr_decay!r} (none, cosine or linear)")
    checks.number(t.lr_min, "train.lr_min", 0)
    if t.lr_min > t.lr:
        raise UserError(f"train.lr_min ({t.lr_min}) must not exceed train.lr ({t.lr})")
    if isinstance(t.bf16, str) and t.bf16 != "auto":
        raise UserError(f"train.bf16 must be true, false or auto, got {t.bf16!r}")
    checks.number(t.grad_clip, "train.grad_clip", 0, lo_open=True)
    checks.number(t.ema_decay, "train.ema_decay", 0, 1, hi_open=True)
    checks.integer(t.checkpoint_every, "train.checkpoint_every", 1)
    checks.integer(t.keep_checkpoints, "train.keep_checkpoints", 1)
    checks.integer(t.log_every, "train.log_every", 1)
    checks.seed(t.seed, "train.seed")
    checks.integer(t.max_bad_steps, "train.max_bad_steps", 0)
    if t.device not in ("auto", "cpu", "cuda") and not t.device.startswith("cuda:"):
        raise UserError(f"unknown train.device {t.device!r} (auto, cpu or cuda)")
    checks.integer(t.threads, "train.threads", 0, 4096)
    checks.integer(t.samples, "train.samples", 0, 100_000)
    if not 0 <= t.cond_dropout < 1:
        raise UserError(f"train.cond_dropout must be in [0, 1), got {t.cond_dropout}")
    if not 0 <= t.cond_dropout_each < 1:
        raise UserError(f"train.cond_dropout_each must be in [0, 1), got {t.cond_dropout_each}")
    checks.integer(t.clip_frames, "train.clip_frames", 0, 10**6)


def _validate_method(m) -> None:
    for key, allowed in (("target", ("stopgrad", "ema")), ("distance", ("pseudo_huber", "l2")), ("weighting", ("gap", "edm"))):
        value = getattr(m, key, allowed[0])
        if value not in allowed:
            raise UserError(f"unknown method.{key} {value!r} ({' or '.join(allowed)})")
    scale = getattr(m, "cfg_scale", [])
    if scale and (len(scale) != 2 or not all(isinstance(w, (int, float)) and math.isfinite(w) for w in scale)
                  or not 0 <= scale[0] <= scale[1]):
        raise UserError(f"method.cfg_scale must be [w_min, w_max] with 0 <= w_min <= w_max, got {scale}")
    if not 0 < m.sigma_min < m.sigma_max:
        raise UserError("method.sigma_min must be > 0 and below method.sigma_max")
    for key, limits in _METHOD_RANGES.items():
        if getattr(m, key, None) is not None:
            checks.number(getattr(m, key), f"method.{key}", **limits)
    for key, lo in _METHOD_INTS.items():
        if getattr(m, key, None) is not None:
            checks.integer(getattr(m, key), f"method.{key}", lo, 10**9)
    if getattr(m, "s0", None) is not None and getattr(m, "s1", None) is not None and m.s1 < m.s0:
        raise UserError(f"method.s1 ({m.s1}) must not be below method.s0 ({m.s0})")
    if METHODS[m.name].needs_teacher and not m.teacher:
        raise UserError(f"method.name {m.name} needs method.teacher (a teacher run directory or checkpoint)")


def _validate_sample(s, m) -> None:
    checks.steps(s.steps, "sample.steps")
    checks.batch_size(s.batch_size, "sample.batch_size")
    if s.sampler not in ("heun", "euler"):
        raise UserError(f"unknown sample.sampler {s.sampler!r} (heun or euler)")
    if s.cfg_scale is not None:
        checks.number(s.cfg_scale, "sample.cfg_scale", 0)
    if not isinstance(s.guide, list) or not all(isinstance(v, str) and v for v in s.guide):
        raise UserError(f"sample.guide must be a list of condition names, got {s.guide!r}")
    for key, levels in s.sigmas.items():
        try:
            k = int(key)
        except (TypeError, ValueError):
            raise UserError(f"sample.sigmas keys are step counts, got {key!r}") from None
        if not isinstance(levels, list) or len(levels) != k:
            raise UserError(f"sample.sigmas for {key} step(s) must list {key} noise levels, got {levels!r}")
        for v in levels:
            checks.number(v, f"sample.sigmas[{key}]", 0, m.sigma_max, lo_open=True)
        if any(b > a for a, b in zip(levels, levels[1:])):
            raise UserError(f"sample.sigmas[{key}] must never rise, got {levels}")


def check_network_size(cfg: RunConfig) -> int:
    """The backbone's parameter count, found without allocating it; above checks.MAX_PARAMETERS is an error."""
    modality = get_modality(cfg.modality)
    codec = modality.build_codec(cfg)
    count = count_backbone_parameters(cfg.backbone, modality.backbone_presets, codec.dims, codec.channels)
    if count > checks.MAX_PARAMETERS:
        raise UserError(f"the backbone config describes {count:,} parameters, above the limit of "
                        f"{checks.MAX_PARAMETERS:,} (lower backbone.channels or the number of blocks)")
    return count


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise UserError(f"config file {path} is nested too deeply to be a run config") from None
    if not isinstance(raw, dict):
        raise UserError(f"config file {path} must hold a YAML mapping")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config, apply `--set` overrides, validate."""
    return config_from_dict(apply_overrides(load_yaml(path), overrides or []))


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)

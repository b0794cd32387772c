"""Jacobian-vector products through a backbone, for the continuous-time objectives (sCM, MeanFlow).

`jvp(fn, primals, tangents)` returns (fn(*primals), d/de fn(primals + e tangents) at e = 0) in one forward pass
with forward-mode AD (`torch.func.jvp`). What makes that work through every backbone:
- attention runs as plain tensor ops (`forward_ad_safe`): the fused SDPA kernels and xformers have no forward AD;
- the primal output keeps its autograd graph, so a loss on it trains the network as a plain forward would, and
  dropout draws one mask that both the primal and the tangent see;
- under bf16 autocast the tangents enter in float32 (they must match the float32 primals) and the layers compute
  them in bf16 like the primals; callers combine the result in float32. PyTorch's forward derivative of
  group_norm returns a float32 tangent for a bf16 input (the primal stays bf16), which the next convolution
  rejects, so within `jvp` group norms run in float32 and cast back to their input's dtype (primal and tangent);
- under DistributedDataParallel the function must call the unwrapped module (`Method.unwrap`): torch.func cannot
  run through DDP's forward, so the training loop all-reduces the gradients itself (`Method.bypasses_ddp`).

`finite_difference_jvp` is the fallback where forward AD is unavailable (a custom kernel without a forward
derivative): a central difference in float32 with the same dropout mask in both evaluations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from cm_media.math.parameterization import append_dims
from cm_media.nn.attention import forward_ad_safe


class _GroupNormInFloat32(torch.overrides.TorchFunctionMode):
    """F.group_norm of a low-precision input computed in float32 and cast back, tangent included (see above)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.group_norm and args[0].dtype in (torch.bfloat16, torch.float16):
            x, rest = args[0], [a.float() if isinstance(a, torch.Tensor) else a for a in args[1:]]
            kw = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
            with torch.autocast(device_type=x.device.type, enabled=False):
                return func(x.float(), *rest, **kw).to(x.dtype)
        return func(*args, **kwargs)


def jvp(fn: Callable, primals: Sequence[torch.Tensor], tangents: Sequence[torch.Tensor]):
    """(fn(*primals), J_fn(primals) . tangents) by forward-mode AD; the first output keeps its autograd graph."""
    primals = tuple(p.float() for p in primals)
    tangents = tuple(t.float() for t in tangents)
    with forward_ad_safe(), _GroupNormInFloat32():
        out, tangent_out = torch.func.jvp(fn, primals, tangents)
    return out.float(), tangent_out.float()


def _rng_devices(tensors) -> list:
    return sorted({t.device.index or 0 for t in tensors if t.is_cuda})


def finite_difference_jvp(fn: Callable, primals: Sequence[torch.Tensor], tangents: Sequence[torch.Tensor],
                          eps: float | torch.Tensor):
    """(fn(*primals), (fn(p + eps t) - fn(p - eps t)) / (2 eps)): the output with its graph, the difference
    without. `eps` is a number or one step per sample ([B]); the two evaluations run in float32 without autocast,
    and all three start from the same RNG state, so dropout draws one mask for them."""
    primals = tuple(p.float() for p in primals)
    tangents = tuple(t.float() for t in tangents)
    eps_t = torch.as_tensor(eps, dtype=torch.float32, device=primals[0].device)
    devices = _rng_devices(primals)

    def shifted(sign: float):
        args = [p + sign * (append_dims(eps_t, p.ndim) if eps_t.ndim else eps_t) * t for p, t in zip(primals, tangents)]
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            with torch.autocast(device_type=primals[0].device.type, enabled=False):
                return fn(*args).float()

    plus, minus = shifted(1.0), shifted(-1.0)
    diff = (plus - minus) / (2 * (append_dims(eps_t, plus.ndim) if eps_t.ndim else eps_t))
    return fn(*primals).float(), diff

"""MeanFlow: the identity and its target on toy functions, JVPs through every backbone (attention, the channels-last
GroupNorm fast path, dropout, bf16), one- and two-step sampling, and tiny training runs."""

import copy

import pytest
import torch

from cm_media.conditions import INTERVAL, Condition
from cm_media.math import losses
from cm_media.math.parameterization import MeanFlowNet, append_dims
from cm_media.math.samplers import meanflow_sample, meanflow_times
from cm_media.methods.jvp import finite_difference_jvp, jvp
from cm_media.methods.meanflow import MeanFlow, MeanFlowConfig
from cm_media.nn.spacetime import SpaceTimeUNet, SpaceTimeUNetConfig
from cm_media.nn.transformer import DiT, DiTConfig
from cm_media.nn.unet import UNet, UNetConfig
from cm_media.runs.config import load_config
from cm_media.runs.training import train

SCALAR = [Condition(INTERVAL, kind="scalar").to_dict()]


def test_target_and_adaptive_weight_by_hand():
    v = torch.tensor([[1.0, -2.0]])
    dudt = torch.tensor([[0.5, 4.0]])
    t, r = torch.tensor([0.8]), torch.tensor([0.3])
    assert torch.allclose(losses.meanflow_target(v, dudt, t, r), torch.tensor([[0.75, -4.0]]))  # v - 0.5 dudt
    assert torch.allclose(losses.meanflow_target(v, dudt, t, t), v)  # r = t: flow matching
    sq = torch.tensor([3.0, 0.0])
    assert torch.allclose(losses.adaptive_weight(sq, 1.0, 0.01), torch.tensor([1 / 3.01, 100.0]))
    assert torch.allclose(losses.adaptive_weight(sq, 0.5, 1.0), torch.tensor([0.5, 1.0]))
    assert torch.equal(losses.adaptive_weight(sq, 0.0, 0.01), torch.ones(2))


class ToyU(torch.nn.Module):
    """Stands in for a MeanFlowNet: u(z, r, t) from a closure, with train/eval like a network."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.w = torch.nn.Parameter(torch.ones(()))

    def average_velocity(self, z, r, t, cond=None):
        return self.w * self.fn(z, append_dims(r, z.ndim), append_dims(t, z.ndim))


def _method(**kw):
    cfg = MeanFlowConfig(**{"adaptive_p": 0.0, **kw})
    return MeanFlow(cfg, None, 10)


@pytest.mark.parametrize("mode", ["autograd", "finite_difference"])
def test_exact_average_velocity_of_one_point_has_zero_loss(mode):
    """Data = one point c: every path is z_s = (1 - s) c + s e, so the average velocity over any [r, t] is
    e - c = (z_t - c) / t; its total derivative along the flow is 0, the target is v, the loss exactly 0."""
    c = torch.tensor([0.3, -0.7]).reshape(1, 2, 1)
    net = ToyU(lambda z, r, t: (z - c) / t)
    x0 = c.expand(6, 2, 1).clone()
    loss = _method(jvp=mode, flow_ratio=0.5).loss(net, x0, 0, torch.Generator().manual_seed(0))
    assert loss.shape == (6,)
    assert loss.max() < (1e-9 if mode == "autograd" else 1e-6)


def test_linear_network_target_by_hand():
    """u = a z + b t + c r: du/dt = a v + b (tangent (v, 0, 1)), target v - (t - r)(a v + b)."""
    a, b, cr = 0.5, 2.0, -1.0
    net = ToyU(lambda z, r, t: a * z + b * t + cr * r)
    m = _method(flow_ratio=0.0)
    x0 = torch.randn(4, 1, 3, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(3)
    loss = m.loss(net, x0, 0, gen)
    gen = torch.Generator().manual_seed(3)  # the same draws, by hand
    t, r = m.sample_times(4, gen)
    e = torch.randn(x0.shape, generator=gen)
    tb, rb = append_dims(t, 3), append_dims(r, 3)
    z = (1 - tb) * x0 + tb * e
    v = e - x0
    target = v - (tb - rb) * (a * v + b)
    u = a * z + b * tb + cr * rb
    assert (t >= r).all() and (t > r).any()
    assert torch.allclose(loss, ((u - target) ** 2).sum(dim=(1, 2)), atol=1e-5)


def test_time_sampling_shares_and_order():
    m = _method(flow_ratio=0.75, p_mean=-0.4, p_std=1.0)
    t, r = m.sample_times(400, torch.Generator().manual_seed(0))
    assert (t >= r).all() and ((t > 0) & (t < 1)).all()
    assert (t == r).sum() == 300
    m.rank, m.world = 1, 2  # rank 1 of 2 keeps the second half of the same global draws
    t2, r2 = m.sample_times(200, torch.Generator().manual_seed(0))
    m.rank, m.world = 0, 1
    t_all, _ = _method(flow_ratio=0.75).sample_times(400, torch.Generator().manual_seed(0))
    assert torch.equal(t2, t_all[200:])


def _randomize(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():  # zero-initialized output layers would make every JVP trivially zero
            p.copy_(0.15 * torch.randn(p.shape, generator=g))
    return net


BACKBONES = {
    "unet": (lambda: UNet(UNetConfig(dims=2, channels=16, channel_mult=[1, 2], num_res_blocks=1, attn_levels=[1],
                                     cond=SCALAR)), (2, 1, 8, 8)),
    "dit": (lambda: DiT(DiTConfig(dims=2, size="dit-micro", patch_size=2, cond=SCALAR)), (2, 1, 8, 8)),
    "dit-factorized": (lambda: DiT(DiTConfig(dims=3, size="dit-micro", patch_size=[1, 2, 2], attention="factorized",
                                             cond=SCALAR)), (2, 1, 3, 4, 4)),
    "spacetime": (lambda: SpaceTimeUNet(SpaceTimeUNetConfig(channels=8, channel_mult=[1, 2], temporal_attn_levels=[1],
                                                            spatial_attn_levels=[1], cond=SCALAR)), (2, 1, 4, 8, 8)),
}


def _case(name):
    build, shape = BACKBONES[name]
    net = _randomize(build()).eval()
    g = torch.Generator().manual_seed(5)
    x, v = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    t, r = torch.tensor([0.7, 0.4]), torch.tensor([0.2, 0.4])
    return net, x, v, t, r


def _fn(net):
    return lambda z, r, t: net(z, t, {INTERVAL: t - r})


def _richardson(fn, primals, tangents, h=1e-2):
    """Central differences at h and h/2 combined (4 D(h/2) - D(h)) / 3: error O(h^4) (float32 networks)."""
    def central(step):
        with torch.no_grad():
            plus = fn(*(p + step * u for p, u in zip(primals, tangents)))
            minus = fn(*(p - step * u for p, u in zip(primals, tangents)))
        return (plus - minus) / (2 * step)

    return (4 * central(h / 2) - central(h)) / 3


@pytest.mark.parametrize("name", list(BACKBONES))
def test_jvp_matches_finite_differences_through_backbones(name):
    """Forward-mode AD through attention (math path), norms and the time/interval embeddings = an extrapolated
    central difference of the same network."""
    net, x, v, t, r = _case(name)
    tangents = (v, torch.zeros(2), torch.ones(2))
    out, d = jvp(_fn(net), (x, r, t), tangents)
    assert torch.allclose(out, net(x, t, {INTERVAL: t - r}), atol=1e-5)
    # the JVP is linear in the tangent: difference the data direction with a wide step and the time direction
    # (sinusoids up to 1000 rad per unit) with a narrow one
    zero = torch.zeros(2)
    ref = _richardson(_fn(net), (x, r, t), (v, zero, zero), 1e-2) + \
        _richardson(_fn(net), (x, r, t), (torch.zeros_like(v), zero, torch.ones(2)), 1e-4)
    assert d.abs().max() > 1e-3
    assert (d - ref).norm() < 3e-3 * ref.norm()


@pytest.mark.parametrize("name", ["unet", "spacetime"])
def test_jvp_through_channels_last_groupnorm_fast_path(name):
    net, x, v, t, r = _case(name)
    tangents = (v, torch.zeros(2), torch.ones(2))
    _, ref = jvp(_fn(net), (x, r, t), tangents)
    fast = copy.deepcopy(net)
    fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
    for m in fast.modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.nn.Parameter) and w.ndim == x.ndim:
            w.data = w.data.contiguous(memory_format=fmt)
    calls = []
    from cm_media.nn import layers

    original = layers._channels_last
    try:
        layers._channels_last = lambda h: calls.append(original(h)) or calls[-1]
        _, got = jvp(_fn(fast), (x.contiguous(memory_format=fmt), r, t), tangents)
    finally:
        layers._channels_last = original
    assert any(calls)  # the fast path ran
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_dropout_shares_one_mask_between_output_and_tangent():
    build, shape = BACKBONES["unet"]
    net = _randomize(UNet(UNetConfig(dims=2, channels=16, channel_mult=[1, 2], num_res_blocks=1, dropout=0.3,
                                     cond=SCALAR))).train()
    g = torch.Generator().manual_seed(2)
    x, v = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    t, r = torch.tensor([0.7, 0.4]), torch.tensor([0.2, 0.4])
    tangents = (v, torch.zeros(2), torch.zeros(2))
    torch.manual_seed(11)
    out, d = jvp(_fn(net), (x, r, t), tangents)
    torch.manual_seed(11)  # the finite difference's evaluations start from the same RNG state: the same masks
    out_fd, d_fd = finite_difference_jvp(_fn(net), (x, r, t), tangents, 1e-2)
    assert torch.allclose(out, out_fd, atol=1e-6)
    assert (d - d_fd).norm() < 1e-2 * d.norm()
    torch.manual_seed(12)  # other masks: a different derivative (so the check above means something)
    _, d_other = finite_difference_jvp(_fn(net), (x, r, t), tangents, 1e-2)
    assert (d - d_other).norm() > 0.1 * d.norm()


def test_jvp_output_trains_like_a_plain_forward():
    net, x, v, t, r = _case("unet")
    out, _ = jvp(_fn(net), (x, r, t), (v, torch.zeros(2), torch.ones(2)))
    (out**2).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    (net(x, t, {INTERVAL: t - r}) ** 2).sum().backward()
    for a, b in zip(grads, (p.grad for p in net.parameters())):
        # per tensor, relative to its norm: two float32 paths sum in different orders, so an element near zero
        # can differ by 1e-6 of the tensor's scale (seen: 3.0177e-3 vs 3.0196e-3 in a tensor of norm ~10)
        assert (a - b).norm() <= 1e-4 * b.norm() + 1e-6


@pytest.mark.parametrize("name", ["dit", "unet", "spacetime"])
def test_bf16_jvp_close_to_float32(name):
    """The UNet's group norms: PyTorch's forward derivative of group_norm gives a bf16 input a float32 tangent,
    which the next bf16 convolution rejects (every JVP method crashed with train.bf16 on a UNet)."""
    net, x, v, t, r = _case(name)
    tangents = (v, torch.zeros(2), torch.ones(2))
    _, ref = jvp(_fn(net), (x, r, t), tangents)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, d = jvp(_fn(net), (x, r, t), tangents)
    assert out.dtype == d.dtype == torch.float32
    assert (d - ref).norm() < 0.05 * ref.norm()


def test_sampler_steps_and_times():
    assert meanflow_times(1) == [1.0, 0.0]
    assert meanflow_times(2) == [1.0, 0.5, 0.0]
    assert meanflow_times(2, [80.0, 1.0]) == [1.0, 0.5, 0.0]
    calls = []

    def u(z, r, t):  # exact average velocity of the one-point data c = 2: (z - c) / t
        calls.append((r[0].item(), t[0].item()))
        return (z - 2.0) / t.reshape(-1, 1)

    noise = torch.randn(3, 4)
    for steps in (1, 2, 4):
        calls.clear()
        x = meanflow_sample(u, noise, meanflow_times(steps))
        assert len(calls) == steps and calls[0] == (1.0 - 1.0 / steps, 1.0)
        assert torch.allclose(x, torch.full_like(x, 2.0), atol=1e-5)


def test_meanflow_net_x0_estimate():
    """forward(x, sigma) = z - t u(z, 0, t) with t = sigma / (1 + sigma), z = x / (1 + sigma); the backbone sees
    c_noise = t / 1000 and the interval (t - r) / 100 (both times at frequencies up to 1 rad per unit)."""
    class Lin(torch.nn.Module):
        def forward(self, z, t, cond):
            return 0.5 * z + append_dims(t + 2 * cond[INTERVAL], z.ndim)

    net = MeanFlowNet(Lin())
    x, sigma = torch.randn(2, 1, 3), torch.tensor([1.0, 3.0])
    t = sigma / (1 + sigma)
    z = x / append_dims(1 + sigma, 3)
    expect = z - append_dims(t, 3) * (0.5 * z + append_dims(t / 1000 + 2 * t / 100, 3))
    assert torch.allclose(net(x, sigma), expect, atol=1e-6)


def tiny(digits_config, steps, **extra):
    sets = {"train.steps": steps, "train.batch_size": 8, "train.log_every": 1, "train.warmup_steps": 1,
            "backbone.preset": "tiny", "train.checkpoint_every": 1000, "method.name": "meanflow"}
    sets.update(extra)
    return load_config(digits_config, [f"{k}={v}" for k, v in sets.items()])


def test_tiny_meanflow_run_samples_in_one_and_two_steps(tmp_path, digits_config):
    import cm_media

    train(tiny(digits_config, 3), tmp_path / "mf", progress=False)
    gen = cm_media.load(tmp_path / "mf")
    assert gen.model.kind == "meanflow" and gen.is_consistency
    assert INTERVAL not in gen.condition_spec()
    for steps in (1, 2):
        out = gen.generate(3, steps=steps, seed=1)
        assert out.shape == (3, 1, 8, 8) and torch.isfinite(out).all()


def test_class_conditional_guided_meanflow_trains_in_bf16_with_finite_differences(tmp_path, repo_root):
    import os

    import cm_media

    cfg = load_config(os.path.join(repo_root, "configs", "image", "digits_class_ict.yaml"), [
        "method.name=meanflow", "method.omega=2.0", "train.cond_dropout=0.2", "train.steps=2", "train.batch_size=8",
        "backbone.preset=tiny", "train.warmup_steps=1", "train.log_every=1", "method.jvp=finite_difference",
        "train.bf16=true"])
    train(cfg, tmp_path / "mfc", progress=False)
    gen = cm_media.load(tmp_path / "mfc")
    assert list(gen.condition_spec()) == ["class"]
    out = gen.generate(2, steps=1, cond={"class": ["3", "7"]}, cfg_scale=1.5)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()

import pytest
import torch

from cm_media.errors import UserError
from cm_media.runs import checkpoint as ckpt


def test_round_trip_and_metadata(tmp_path):
    p = tmp_path / "c" / "x.safetensors"
    ckpt.save_checkpoint(p, {"a.w": torch.arange(4.0), "b": torch.ones(2, 2)}, {"step": 3, "config": {"k": 1}})
    tensors, meta = ckpt.load_checkpoint(p)
    assert torch.equal(tensors["a.w"], torch.arange(4.0))
    assert meta == {"step": 3, "config": {"k": 1}}


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    p = tmp_path / "x.safetensors"
    ckpt.save_checkpoint(p, {"a": torch.zeros(1)}, {"v": 1})

    def boom(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", boom)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(p, {"a": torch.ones(1)}, {"v": 2})
    assert sorted(x.name for x in tmp_path.iterdir()) == ["x.safetensors"]  # old file intact, no temp left
    assert ckpt.load_checkpoint(p)[1] == {"v": 1}


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found: .*nope.safetensors"):
        ckpt.load_checkpoint(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="bad.safetensors"):
        ckpt.load_checkpoint(bad)


def test_optimizer_state_round_trip():
    w = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.RAdam([w], lr=0.1)
    w.sum().backward()
    opt.step()
    tensors, meta = ckpt.optimizer_tensors(opt)
    w2 = torch.nn.Parameter(w.detach().clone())
    opt2 = torch.optim.RAdam([w2], lr=0.5)
    ckpt.load_optimizer(opt2, tensors, meta)
    assert opt2.param_groups[0]["lr"] == 0.1
    assert torch.equal(opt2.state[w2]["exp_avg"], opt.state[w]["exp_avg"])


def test_no_space_is_a_user_error_with_the_size_and_no_temporary_file(tmp_path, monkeypatch):
    import errno

    def full(tensors, filename, metadata=None):
        open(filename, "wb").write(b"\0" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full)
    p = tmp_path / "c" / "step.safetensors"
    with pytest.raises(ckpt.NoSpace, match=r"needs 0\.0 MB") as info:
        ckpt.save_checkpoint(p, {"a": torch.zeros(10)}, {"v": 1})
    assert info.value.needed == ckpt.file_size({"a": torch.zeros(10)}, {"v": 1}) and info.value.needed > 40
    assert list((tmp_path / "c").iterdir()) == []

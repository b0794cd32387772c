import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def one_thread():
    """One intra-op thread: two spin-waiting threads on a busy 2-core machine make these small ops 20x slower.
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def digits_config():
    return os.path.join(ROOT, "configs", "image", "digits_ict.yaml")


@pytest.fixture
def repo_root():
    return ROOT


@pytest.fixture
def bench_script():
    """Load a script of benchmarks/ as a module: bench_script("gpu_check")."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def _tiny_overrides(steps=4, **extra):
    """--set overrides that make any shipped config train in seconds."""
    items = {"train.steps": steps, "train.batch_size": 8, "train.log_every": 1, "train.samples": 4,
             "train.warmup_steps": 1}
    items.update(extra)
    out = []
    for k, v in items.items():
        out += ["--set", f"{k}={v}"]
    return out


@pytest.fixture
def tiny_overrides():
    """Function (steps, **{key: value}) -> ['--set', 'k=v', ...] for fast CLI training runs."""
    return _tiny_overrides


@pytest.fixture(scope="session")
def bundled():
    """Function (name, shipped) -> the bundled model `name`, loaded. A missing one fails the test when it is
    `shipped` (committed with this version) and skips it otherwise."""
    import cm_media
    from cm_media.cli.demo import bundled_available

    def load(name: str, shipped: bool):
        if not bundled_available(name):
            if shipped:
                pytest.fail(f"the bundled {name} model is missing (its folder under modalities/ has no weights)")
            pytest.skip(f"no bundled {name} model yet (export one with cm-media export)")
        return cm_media.load(name)

    return load

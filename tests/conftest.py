import os

# OpenMP threads that spin while waiting steal the other core from small toy runs (measured:
# 10x slower tests and notebook kernels on 2 cores). Set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import matplotlib  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory, monkeypatch):
    """Keep caches out of the home folder and make every test start from the same seed."""
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.manual_seed(0)
    yield
    import matplotlib.pyplot as plt
    plt.close("all")


def pytest_configure(config):
    # Toy problems are many small operations: one thread per process is faster than two on a
    # 2-core machine (and far faster when the cores are shared). Subprocesses (notebook kernels,
    # torchrun workers) inherit OMP_NUM_THREADS.
    os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("TOOLKIT_TEST_THREADS", "1"))
    torch.set_num_threads(int(os.environ.get("TOOLKIT_TEST_THREADS", "1")))

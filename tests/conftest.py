import os

import matplotlib
import pytest
import torch

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
    # Two cores: keep each test process on a predictable number of threads.
    torch.set_num_threads(int(os.environ.get("TOOLKIT_TEST_THREADS", "2")))

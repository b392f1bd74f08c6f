"""Fixtures shared by the test modules."""
from pathlib import Path

import pytest
import torch

# On a busy 2-core CPU torch's intra-op threads spin against each other and make the small ops of these
# tests ~100x slower; one thread keeps the in-process tests fast (subprocesses use torch's default).
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """A digit-scenes cache folder shared by a module's tests."""
    return tmp_path_factory.mktemp("digit-scenes-cache")


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Path:
    """An empty working directory, the current directory of the command."""
    work = tmp_path / "ws"
    work.mkdir()
    monkeypatch.chdir(work)
    return work

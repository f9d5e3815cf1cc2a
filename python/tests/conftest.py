import pytest


@pytest.fixture
def lockdir(tmp_path):
    """A directory for lock files (pytest's, on this node's local filesystem)."""
    return tmp_path

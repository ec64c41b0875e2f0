"""Fixtures of the engine tests: the shipped packs installed as plugins for a test file."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator

import pytest

from tests.engine.test_pack_finance import register_packs


@pytest.fixture(scope="module")
def packs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The repository's packs (engine/packs) registered as acd.plugins entry points, as an
    installed wheel would, on sys.path for the test file."""
    root = register_packs(tmp_path_factory.mktemp("packs"))
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    yield
    sys.path.remove(str(root))
    importlib.invalidate_caches()

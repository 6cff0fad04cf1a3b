"""Fixtures shared by the whole suite; the helpers are the package ``tests.helpers``."""
import logging
import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def caplog_streamcrystal(caplog):
    caplog.set_level(logging.WARNING, logger="streamcrystal")
    return caplog

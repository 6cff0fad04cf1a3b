import logging
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def caplog_streamcrystal(caplog):
    caplog.set_level(logging.WARNING, logger="streamcrystal")
    return caplog

"""Fixtures shared by the whole suite; the helpers are the package ``tests.helpers``.

The suite runs on two processes (pytest-xdist, ``-n`` in ``pyproject.toml``'s addopts). Under it,
:func:`pytest_collection_modifyitems` keeps together, on one worker and in the module's order, the
tests of a module that share one of its module-scoped fixtures (a Dask cluster, a proxy and
server, a stored catalog: made once, as in a serial run, and a test that must come last in its
module, like the one that kills a fixture's worker, still does), and hands out the modules
with end-to-end tests (marked ``slow``) first, so that no long test starts last. Every other
test goes to whichever worker is free.
"""
import logging
import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def caplog_streamcrystal(caplog):
    caplog.set_level(logging.WARNING, logger="streamcrystal")
    return caplog


def _shares_a_module_fixture(item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:  # a doctest
        return False
    return any(defs and defs[-1].scope in ("module", "class") for defs in info.name2fixturedefs.values())


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):  # not a pytest-xdist worker: the order as collected
        return
    for item in items:
        if _shares_a_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    # whole modules move (a module's fixtures are still made once in a serial order), stably
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: getattr(item, "module", None) is None or item.module.__name__ not in slow_modules)

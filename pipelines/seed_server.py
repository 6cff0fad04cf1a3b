"""The seed's ``server.py`` as a pipeline file: the peak-tracking graph and where it listens.

``streamcrystal serve seed_server --jsonl results/`` (or ``--catalog PATH``) does what the
seed's ``python server.py`` did: subscribe to the proxy at ``localhost:5568``, prefix
``raw``, and track peaks with ``trackpy.locate(diameter=15, percentile=80,
separation=100)`` and ``trackpy.link(search_range=50)`` on ``dexela_image``.

The seed loaded its background from ``PARAMID-2_background_1.npy``; here the background is
the mean of each run's ``dark`` stream unless ``--subtrahend file.npy`` is given (the
``subtrahend`` override). The seed linked in scan order with ``trackpy.link``, and so does this
server (``linking="trackpy"``), with ``memory="grid"`` added so that one grain spanning several
rows of the scan stays one particle. The seed's ``BestEffortCallback`` has no place in a
server: ``serve`` prints one line per run.
"""
from streamcrystal import load_pipeline

#: The seed's graph is the peak-tracking pipeline file's, with its parameters.
_PEAK_TRACKING = load_pipeline("peak_tracking")
PARAMETERS = {**_PEAK_TRACKING.PARAMETERS, "search_range": 50, "linking": "trackpy", "memory": "grid"}

#: Where ``streamcrystal serve`` listens unless told otherwise (the seed's RemoteDispatcher).
SERVE = {"address": "localhost:5568", "prefix": "raw"}


def make_pipeline(**overrides):
    """The seed server's pipeline, with ``overrides`` (``subtrahend``, ``minmass``, ...)."""
    return _PEAK_TRACKING.make_pipeline(**{**PARAMETERS, **overrides})

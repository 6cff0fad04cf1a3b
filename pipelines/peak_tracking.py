"""The seed's peak-tracking configuration as a ready pipeline file.

Load it with ``streamcrystal.load_pipeline("peak_tracking")`` (or by path), then build:
``make_pipeline(subtrahend=image)``. Keywords given to ``make_pipeline`` override
``PARAMETERS``.

The seed used ``trackpy.locate(diameter=15, percentile=80, separation=100)`` on the
Dexela's ``dexela_image`` and ``trackpy.link(search_range=50)``. Here the peaks are linked in
sample space (``linking="sample"``): peaks within ``search_range`` pixels seen at neighbouring
points of the sample are one particle, whatever the plan's path (grids, snakes, spirals,
re-taken points), with no ``memory`` to tune. A Bragg peak stays within a pixel or two on the
detector from one point of its grain to the next, so ``search_range`` is 5 pixels (the seed's
50 served scan-order linking, which picks the nearest; in sample space every feature within
reach links, and a wide reach joins noise and powder maxima to Bragg peaks).
``make_pipeline(linking="trackpy", search_range=50, memory="grid")`` links in scan order as the
seed did (``pipelines/seed_server.py`` does). Two choices are the user's because they depend
on the sample (the demo sets them):

- ``minmass`` and ``min_frames``: with noisy data most located features are one-frame
  noise maxima; ``minmass`` drops weak features, ``min_frames`` maps only particles seen on
  several points;
- ``maxsize``: powder rings give broad, elongated maxima (trackpy ``size`` ~4 px) that link
  with nearby Bragg peaks (``size`` ~2 px); a ``maxsize`` between the two drops them.
"""
from streamcrystal import peak_tracking

PARAMETERS = {
    "data_key": "dexela_image",
    "diameter": 15,
    "percentile": 80,
    "separation": 100,
    "search_range": 5,
    "linking": "sample",
}


def make_pipeline(**overrides):
    """The seed's pipeline, with ``overrides`` (``subtrahend``, ``minmass``, ``maxsize``, ...)."""
    parameters = {**PARAMETERS, **overrides}
    if parameters.get("linking") == "trackpy":
        parameters.setdefault("memory", "grid")  # scan-order linking must bridge a row's gap
    return peak_tracking(parameters.pop("data_key"), **parameters)

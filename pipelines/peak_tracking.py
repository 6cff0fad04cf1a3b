"""The seed's peak-tracking configuration as a ready pipeline file.

Load it with ``streamcrystal.load_pipeline("peak_tracking")`` (or by path), then build:
``make_pipeline(subtrahend=image)``. Keywords given to ``make_pipeline`` override
``PARAMETERS``.

The seed used ``trackpy.locate(diameter=15, percentile=80, separation=100)`` on the
Dexela's ``dexela_image`` and ``trackpy.link(search_range=50)``. One addition is needed for
maps, and two choices are the user's because they depend on the sample (the demo sets them):

- ``memory="grid"``: linking follows scan order, so a grain spanning several rows reappears
  only after a gap of up to one row (two on a snaking grid); ``"grid"`` sets trackpy's
  ``memory`` to that gap for each run's own grid, so one grain stays one particle;
- ``minmass`` and ``min_frames``: with noisy data most located features are one-frame
  noise maxima; ``minmass`` drops weak features, ``min_frames`` maps only particles seen on
  several grid points;
- ``maxsize``: powder rings give broad, elongated maxima (trackpy ``size`` ~4 px) that link
  with nearby Bragg peaks (``size`` ~2 px); a ``maxsize`` between the two drops them.
"""
from streamcrystal import peak_tracking

PARAMETERS = {
    "data_key": "dexela_image",
    "diameter": 15,
    "percentile": 80,
    "separation": 100,
    "search_range": 50,
    "memory": "grid",
}


def make_pipeline(**overrides):
    """The seed's pipeline, with ``overrides`` (``subtrahend``, ``minmass``, ``maxsize``, ...)."""
    parameters = {**PARAMETERS, **overrides}
    return peak_tracking(parameters.pop("data_key"), **parameters)

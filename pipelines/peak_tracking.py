"""The seed's peak-tracking configuration as a ready pipeline file.

Load it with ``streamcrystal.load_pipeline("peak_tracking")`` (or by path), then build:
``make_pipeline(subtrahend=image, memory=points_per_row)``. Keywords given to
``make_pipeline`` override ``PARAMETERS``.

The seed used ``trackpy.locate(diameter=15, percentile=80, separation=100)`` on the
Dexela's ``dexela_image`` and ``trackpy.link(search_range=50)``. Two choices are the user's,
because they depend on the scan, and the demo sets both:

- ``memory``: linking follows scan order, so a grain spanning several rows reappears only
  after a gap of up to one row; ``memory`` of about the points per row keeps it one particle;
- ``minmass`` and ``min_frames``: with noisy data most located features are one-frame
  noise maxima; ``minmass`` drops weak features, ``min_frames`` maps only particles seen on
  several grid points.
"""
from streamcrystal import peak_tracking

PARAMETERS = {
    "data_key": "dexela_image",
    "diameter": 15,
    "percentile": 80,
    "separation": 100,
    "search_range": 50,
}


def make_pipeline(**overrides):
    """The seed's pipeline, with ``overrides`` (``subtrahend``, ``memory``, ``minmass``, ...)."""
    parameters = {**PARAMETERS, **overrides}
    return peak_tracking(parameters.pop("data_key"), **parameters)

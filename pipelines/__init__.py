"""Ready pipeline files, installed as ``streamcrystal.pipelines``.

Each file defines ``make_pipeline(**overrides) -> Pipeline``; load one by name with
``streamcrystal.load_pipeline("peak_tracking")`` (or by path).
"""

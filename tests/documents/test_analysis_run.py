"""The feature documents, made column by column, are the documents of the pandas row-by-row way."""
from __future__ import annotations

import numpy as np
import pandas as pd

from streamcrystal.documents.analysis_run import AnalysisRun, _plain
from streamcrystal.schema import feature_columns


def row_by_row(run: AnalysisRun, stream: str, features: pd.DataFrame, extra: dict) -> list[dict]:
    """The former way: assign, reindex, itertuples, each value made plain."""
    columns = list(run._keys(stream))
    table = features.assign(**extra).reindex(columns=columns)
    return [{key: _plain(value) for key, value in zip(columns, row)} for row in table.itertuples(index=False)]


def same(a, b) -> bool:
    return type(a) is type(b) and (a == b or (isinstance(a, float) and np.isnan(a) and np.isnan(b)))


def test_feature_events_hold_the_same_plain_values_as_the_row_by_row_way():
    rng = np.random.default_rng(3)
    columns = feature_columns(9)
    features = pd.DataFrame({name: rng.uniform(0, 100, 6) for name in columns})
    features["frame"] = np.int64(4)
    features.loc[2, "ep"] = np.nan
    features["size"] = features["size"].astype(np.float32)
    del features["signal"]  # a column the table lacks: NaN in the events
    run = AnalysisRun({"uid": "raw-1"}, {}, feature_columns=columns, placement={"dimensions": ["x"]})
    run.open(streams=("features", "tracks"))
    for stream, extra in (("features", {"reading": 3, "point": np.int64(-1)}),
                          ("tracks", {"reading": 3, "point": 7, "particle": np.arange(6, dtype=np.int64) + 10})):
        events = [doc["data"] for _, doc in run._features(stream, features, extra)]
        expected = row_by_row(run, stream, features, extra)
        assert len(events) == 6 and [list(e) for e in events] == [list(e) for e in expected]
        for got, want in zip(events, expected):
            assert all(same(got[key], want[key]) for key in want), (got, want)
    assert run._features("features", features.iloc[:0], {"reading": 1, "point": 1}) == []

"""The feature documents, made column by column, are the documents of the pandas row-by-row way."""
from __future__ import annotations

import event_model
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


def test_feature_pages_hold_the_same_plain_values_as_the_row_by_row_way():
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
        pages = run._features(stream, features, extra)
        assert [name for name, _ in pages] == ["event_page"]  # one page for a frame's rows
        event_model.schema_validators[event_model.DocumentNames.event_page].validate(pages[0][1])
        events = [event["data"] for event in event_model.unpack_event_page(pages[0][1])]
        expected = row_by_row(run, stream, features, extra)
        assert len(events) == 6 and [list(e) for e in events] == [list(e) for e in expected]
        for got, want in zip(events, expected):
            assert all(same(got[key], want[key]) for key in want), (got, want)
    assert run._features("features", features.iloc[:0], {"reading": 1, "point": 1}) == []


def test_a_whole_runs_tracks_come_in_pages_of_at_most_page_rows(monkeypatch):
    from streamcrystal.documents import analysis_run

    monkeypatch.setattr(analysis_run, "PAGE_ROWS", 4)
    columns = feature_columns(9)
    tracks = pd.DataFrame({name: np.arange(10.0) for name in columns}).assign(frame=np.arange(10), particle=1)
    run = AnalysisRun({"uid": "raw-1"}, {}, feature_columns=columns)
    run.open(streams=("features",))
    run._descriptor("tracks", run._keys("tracks"))
    pages = [doc for _, doc in run._features("tracks", tracks, {})]
    assert [len(page["seq_num"]) for page in pages] == [4, 4, 2]
    rows = [event["data"] for page in pages for event in event_model.unpack_event_page(page)]
    assert [row["y"] for row in rows] == list(range(10)) and [row["frame"] for row in rows] == list(range(10))
    assert [n for page in pages for n in page["seq_num"]] == list(range(1, 11))

"""Independent references: the processed image with numpy alone, features and links with trackpy alone."""
from __future__ import annotations

import event_model
import numpy as np
import pandas as pd
import trackpy

from tests.helpers.rawruns import DATA_KEY


def mean_image(frames):
    return np.asarray(frames, dtype=np.float64).reshape(-1, *np.shape(frames)[-2:]).mean(axis=0)


def processed(frames, background=None):
    image = mean_image(frames)
    if background is not None:
        image = image - mean_image(background)
    return np.clip(image, 0, None)


def offline_features(frames_per_event, background=None, *, diameter, **locate_kwargs) -> pd.DataFrame:
    tables = []
    for seq_num, frames in enumerate(frames_per_event, start=1):
        found = trackpy.locate(processed(frames, background), diameter, **locate_kwargs)
        found["frame"] = seq_num
        tables.append(found)
    return pd.concat(tables, ignore_index=True)


def offline_links(features: pd.DataFrame, search_range, **link_kwargs) -> pd.DataFrame:
    return trackpy.link(features.copy(), search_range, **link_kwargs)


def partition(tracks: pd.DataFrame) -> set[frozenset]:
    """Linked features as a set of particles, each a set of (frame, rounded y, rounded x)."""
    groups = {}
    for row in tracks.itertuples(index=False):
        groups.setdefault(row.particle, set()).add((int(row.frame), round(row.y, 6), round(row.x, 6)))
    return {frozenset(group) for group in groups.values()}


def timeless(table: pd.DataFrame) -> pd.DataFrame:
    """A table without its ``latency`` column: when a result came out depends on the machine."""
    return table.drop(columns="latency", errors="ignore")


def event_rows(docs, descriptors) -> pd.DataFrame:
    """The data of the events (and of the event pages, unpacked by event-model) of ``descriptors``."""
    rows = []
    for name, doc in docs:
        if name == "event" and doc["descriptor"] in descriptors:
            rows.append(doc["data"])
        elif name == "event_page" and doc["descriptor"] in descriptors:
            rows += [event["data"] for event in event_model.unpack_event_page(doc)]
    return pd.DataFrame(rows)


def stream_rows(docs, stream: str) -> pd.DataFrame:
    """The rows of one stream of an analysis run (events and event pages), as a DataFrame of their data."""
    return event_rows(docs, {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == stream})


__all__ = ["DATA_KEY", "processed", "offline_features", "offline_links", "partition", "stream_rows", "event_rows", "timeless"]

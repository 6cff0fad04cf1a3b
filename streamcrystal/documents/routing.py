"""Raw documents in: attribute each one to its run and stream (an event-model ``DocumentRouter``).

:class:`DocumentRouting` is the state of the graph's ``runs`` node: the open runs, their
descriptors, the runs already stopped. Each document becomes zero or more
:class:`~streamcrystal.records.Routed` records; an event page becomes one per event. A
document that
cannot be attributed (an event before any start, an unknown descriptor, a second stop, a
missing key) carries a ``problem``, is logged with its run uid and ``seq_num``, and ends up in
the analysis stop's ``reason``. Nothing here modifies a raw document in place.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping

import event_model

from ..records import Routed, log_skipped

__all__ = ["EXTERNAL_DOCUMENTS", "DocumentRouting"]

logger = logging.getLogger("streamcrystal")

#: Documents that describe where external data live (and are consumed, not analysed).
EXTERNAL_DOCUMENTS = ("resource", "datum", "datum_page", "stream_resource", "stream_datum")
_ROUTED = frozenset({"start", "descriptor", "event", "event_page", "stop", *EXTERNAL_DOCUMENTS})


class DocumentRouting(event_model.DocumentRouter):
    """Attribute raw documents to their run and stream: ``route((name, doc)) -> [Routed, ...]``.

    Examples
    --------
    >>> routing = DocumentRouting()
    >>> _ = routing.route(("start", {"uid": "r1", "time": 0}))
    >>> _ = routing.route(("descriptor", {"uid": "d1", "run_start": "r1", "name": "primary"}))
    >>> [(r.name, r.run_uid, r.stream) for r in routing.route(("event", {"descriptor": "d1", "seq_num": 1, "data": {}}))]
    [('event', 'r1', 'primary')]
    >>> routing.route(("event", {"descriptor": "d9", "seq_num": 2, "data": {}}))[0].problem
    "event with unknown descriptor 'd9'"
    """

    def __init__(self) -> None:
        super().__init__()
        self.starts: dict[str, dict] = {}
        self.descriptors: dict[str, tuple[str, str]] = {}  # descriptor uid -> (run uid, stream)
        self.stopped: deque = deque(maxlen=256)
        self._routed: list[Routed] = []

    def route(self, item) -> list[Routed]:
        """The routed records of one ``(name, doc)`` pair (the graph's ``runs`` node)."""
        try:
            name, doc = item
        except (TypeError, ValueError):
            return [self._problem(Routed("unknown", {}), f"not a (name, document) pair: {item!r:.80}")]
        if not isinstance(doc, Mapping):
            return [self._problem(Routed(str(name), {}), f"{name} document is not a mapping")]
        if name not in _ROUTED:
            return []  # documents of no interest here (bulk_events, ...) pass unused
        self._routed = []
        try:
            self(name, doc)
        except KeyError as err:
            run_uid = doc.get("run_start") or doc.get("uid") if name in ("start", "stop") else self.only_open_run()
            return [self._problem(Routed(name, dict(doc), run_uid), f"{name} document lacks the key {err.args[0]!r}")]
        routed, self._routed = self._routed, []
        return routed

    def only_open_run(self) -> str | None:
        """The uid of the open run, if exactly one is open (where an orphan document belongs)."""
        return next(iter(self.starts)) if len(self.starts) == 1 else None

    def _problem(self, routed: Routed, problem: str) -> Routed:
        log_skipped(routed.run_uid, routed.doc.get("seq_num"), problem)
        return Routed(routed.name, routed.doc, routed.run_uid, routed.stream, problem)

    # -- the DocumentRouter's handlers: each appends its records ------------------------------

    def start(self, doc):
        if doc["uid"] in self.stopped:  # the same run again (a replay, a re-publication): a new pass
            self.stopped.remove(doc["uid"])
        self.starts[doc["uid"]] = dict(doc)
        self._routed.append(Routed("start", dict(doc), doc["uid"]))

    def descriptor(self, doc):
        run_uid = doc["run_start"]
        if run_uid not in self.starts:
            self._routed.append(self._problem(Routed("descriptor", dict(doc), run_uid),
                                              "descriptor of a run whose start was not seen"))
            return
        stream = doc.get("name", "primary")
        self.descriptors[doc["uid"]] = (run_uid, stream)
        self._routed.append(Routed("descriptor", dict(doc), run_uid, stream))

    def event_page(self, doc):
        # each event on its own (event-model's own conversion would pack the page again)
        for event in event_model.unpack_event_page(doc):
            self.event(event)

    def event(self, doc):
        descriptor = doc["descriptor"]
        if descriptor not in self.descriptors:
            problem = f"event with unknown descriptor {descriptor!r}" if self.starts else "event before any start document"
            self._routed.append(self._problem(Routed("event", doc, self.only_open_run()), problem))
            return
        run_uid, stream = self.descriptors[descriptor]
        self._routed.append(Routed("event", doc, run_uid, stream))

    def stop(self, doc):
        run_uid = doc["run_start"]
        if run_uid in self.stopped:
            problem = "second stop document for this run"
        elif run_uid not in self.starts:
            problem = "stop document of a run whose start was not seen"
        else:
            del self.starts[run_uid]
            self.descriptors = {uid: rs for uid, rs in self.descriptors.items() if rs[0] != run_uid}
            self.stopped.append(run_uid)
            self._routed.append(Routed("stop", dict(doc), run_uid))
            return
        self._routed.append(self._problem(Routed("stop", dict(doc), run_uid), problem))

    def _external(self, name: str, doc) -> None:
        stream = None
        run_uid = doc.get("run_start")
        if "descriptor" in doc and doc["descriptor"] in self.descriptors:
            run_uid, stream = self.descriptors[doc["descriptor"]]
        self._routed.append(Routed(name, dict(doc), run_uid or self.only_open_run(), stream))

    def resource(self, doc):
        self._external("resource", doc)

    def datum(self, doc):
        self._external("datum", doc)

    def datum_page(self, doc):
        self._external("datum_page", doc)

    def stream_resource(self, doc):
        self._external("stream_resource", doc)

    def stream_datum(self, doc):
        self._external("stream_datum", doc)

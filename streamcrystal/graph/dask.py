"""Per-frame work on a Dask cluster: ``scatter`` and ``gather`` around the graph's own nodes.

With ``peak_tracking(..., client=client)`` the same steps as the serial graph's ``process``
and ``locate`` nodes (:func:`streamcrystal.graph.steps.process_step`, ``locate_step``) run on
the workers of a ``dask.distributed`` cluster, one task per frame: the ``locate`` node submits
a task that processes the frame, then locates its peaks (the processed image stays on the
worker; only the features come back)::

    channel ─ group ─ in_flight ─ scatter ─ locate ─ buffer ─ gather ─ (collect, frame_results)
    (tasks, then                   (Dask)   (Dask:     (n)
     problems, stops)                       process, then locate)

Small frames given in one go (a StreamDatum's, an event page's), or given while the cluster
is busy (a step scan faster than the workers), go as one task per group (:class:`GroupFrames`),
so their tasks' cost is shared.

One task rather than one per step: each task costs the client a future (a message to the
scheduler, its report, its release) and the scheduler and a worker a transition each, about
as much as the work on a small frame; the serial graph's two nodes stay as they are. For the
same reason ``gather`` fetches the results that are finished and wait in the buffer together
with the one whose turn it is (one request for several events when the workers are ahead of
the client); they still come out one by one, in the channel's order.

Two traps of streamz's Dask nodes (streamz 0.6) are avoided here:

1. *An exception in a scattered task stalls the stream for good*: ``gather`` raises inside
   the ``buffer``'s loop, which dies, so nothing comes out again and ``emit`` blocks once
   the buffer is full. Here the work never raises (a failing frame becomes a skipped
   :class:`~streamcrystal.records.FrameResult`, logged with its run uid and ``seq_num``),
   and :class:`GatherResults` turns whatever error it still meets (a task that killed its
   workers, a failure downstream) into a skipped frame and a log line, and resubmits a
   frame whose scattered data went with a dead worker.
2. *The stop document overtakes the frames in flight*: here the stop (and the problem
   documents) travel through the same scatter-buffer-gather channel as the frames. That
   channel is first-in first-out, so ``collect`` links a run only after its last frame,
   and the ``features`` stream comes out in ``seq_num`` order, as in the serial pipeline.

Two more showed up on the way: streamz's ``scatter`` is a coroutine per item, so the
frames of one event page (or StreamDatum), emitted in one go, raced through it and reached
the buffer out of order (:class:`InFlight` lets one item at a time in); and a scatter to a
worker that is dying raised into ``emit``, losing the event (:class:`ScatterFrames` sends
it again).

The channel is bounded: at most ``max_in_flight`` items are between ``in_flight`` and the
end of ``gather`` (``buffer`` holds ``max_in_flight - 2``, one is being gathered, one
waits to enter the buffer), and ``group`` holds at most about two groups of small frames
(``group_pixels`` each) waiting to enter, so a producer faster than the cluster waits in
``Pipeline.__call__`` and memory stays bounded. The graph runs on the client's event loop
(a thread of a synchronous client), so ``pipe(name, doc)`` works from plain Python and
from a RunEngine callback; at a stop it waits until the run is linked and mapped.

Frames in HDF5 files (StreamResource/StreamDatum) travel as references (file, dataset,
index): the workers read them, so no image crosses the network. A background (the
subtrahend, or a run's dark mean) is sent to every worker once, not with each frame.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from distributed import Client, Future
from distributed.client import FutureCancelledError
from streamz import Stream
from streamz.dask import buffer as _dask_buffer
from streamz.dask import gather as _dask_gather
from streamz.dask import map as _dask_map
from streamz.dask import scatter as _dask_scatter
from tornado import gen
from tornado.locks import Lock

from ..errors import ClientClosedError, PipelineClosedError, SharedFramesError
from ..records import FrameReference, FrameResult, FrameTask, Routed, log_skipped, replace
from .shared import SharedFrames, SharedSegments, can_share, mapped, shared_memory_hosts
from .steps import locate_step, process_step, skipped_result

__all__ = ["DaskFrames", "FrameGroup", "GroupFrames", "InFlight", "ScatterFrames", "SubmitFrames", "BufferFrames", "GatherResults", "WorkerResult",
           "SHARED", "frame_on_worker"]

logger = logging.getLogger("streamcrystal")

_CARRIED = "streamcrystal item"  # the metadata key under which an item rides along its future
_SENT = "streamcrystal sent"  # ... and what was sent for it (frames in shared memory, the background shared)


# -- on the workers ------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkerResult:
    """What a worker sends back for one item: the result and the log lines it produced.

    ``log`` holds (level, message) of the ``streamcrystal`` records logged while the item was
    processed; they are logged again in the client's process, so a skipped frame is reported
    where the pipeline runs, once.
    """

    result: Any
    log: tuple[tuple[int, str], ...] = ()


class _Capture(logging.Filter):
    """Keep (and silence) the records of one thread, to send them back with the result."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()
        self.records: list[tuple[int, str]] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread:
            return True
        self.records.append((record.levelno, record.getMessage()))
        return False


@contextmanager
def _captured_log():
    capture = _Capture()
    logger.addFilter(capture)
    try:
        yield capture.records
    finally:
        logger.removeFilter(capture)


@dataclass(frozen=True)
class Place:
    """What is scattered for a stop or a problem document: only its place in the channel.

    ``gather`` emits the document itself, which never left the client's process (a problem
    event may hold a whole image).
    """

    name: str
    run_uid: str | None


@dataclass(frozen=True)
class SharedBackground:
    """Stands for a task's background, sent to the workers once (``frame_on_worker``'s ``background``)."""


SHARED = SharedBackground()


def _on_worker(steps: tuple[tuple[Callable, Mapping], ...], item, background) -> WorkerResult:
    """Each ``step(item, **kwargs)`` of ``steps`` in turn, with their log lines captured (for a
    :class:`FrameGroup`, for each of its tasks: the result is then the tuple of their results)."""
    if isinstance(item, Place):
        return WorkerResult(item)  # a stop's or problem's place in the channel: nothing to do
    if isinstance(item, FrameGroup):
        outcomes = [_on_worker(steps, task, background) for task in item.tasks]
        return WorkerResult(tuple(outcome.result for outcome in outcomes),
                            tuple(line for outcome in outcomes for line in outcome.log))
    if isinstance(item, FrameTask) and isinstance(item.background, SharedBackground):
        item = replace(item, background=background)
    with _captured_log() as records:
        for step, kwargs in steps:
            if isinstance(item, FrameTask) and isinstance(item.frames, SharedFrames):
                item = _on_shared_frames(step, item, kwargs)
            else:
                item = step(item, **kwargs)
    return WorkerResult(item, tuple(records))


def _on_shared_frames(step: Callable, item: FrameTask, kwargs):
    """``step`` on a task whose frames are in a shared memory segment of this host, mapped meanwhile.

    What the step returns must not point into the segment once it is closed: an image that is
    a view of the frames (a custom step's) is copied.
    """
    with mapped(item.frames) as frames:
        result = step(replace(item, frames=frames), **kwargs)
        if isinstance(result, FrameTask):
            kept = {name: np.array(value) for name in ("frames", "image")
                    if isinstance(value := getattr(result, name), np.ndarray) and np.may_share_memory(value, frames)}
            result = replace(result, **kept) if kept else result
        del frames
    return result


def frame_on_worker(item, *, process: Callable = process_step, locate: Callable = locate_step,
                    background: np.ndarray | None = None, mask=None, **locate_options) -> WorkerResult:
    """The Dask task of one frame: ``process`` (:func:`~streamcrystal.graph.steps.process_step`),
    then ``locate`` (:func:`~streamcrystal.graph.steps.locate_step`), their log lines captured.

    A task whose background is :data:`SHARED` gets ``background``: the pipeline's
    subtrahend or the run's dark mean, sent to each worker once rather than with every frame.
    A task whose frames are :class:`~streamcrystal.graph.shared.SharedFrames` maps them from
    the client's shared memory segment for the time of ``process`` (:func:`~.shared.mapped`).
    A stop's or problem document's :class:`Place` passes unchanged; a :class:`FrameGroup`'s
    tasks are done in turn (the result is then the tuple of theirs).

    Returns
    -------
    WorkerResult
        The :class:`~streamcrystal.records.FrameResult` (a skipped one, with its problem, if a
        step failed) and the log lines, logged again by the client.

    Examples
    --------
    >>> out = frame_on_worker(FrameTask("r1", 3, "primary", frames=np.zeros((2, 8, 8), np.uint16)), diameter=3)
    >>> out.result.problem, out.log[0][1]
    ('process_step failed: ValueError: image is all zero', 'run r1 seq_num 3: process_step failed: ValueError: image is all zero; skipped')
    """
    process_options = {} if mask is None else {"mask": mask}
    return _on_worker(((process, process_options), (locate, locate_options)), item, background)


# -- in the client's process ---------------------------------------------------------------

class _Flight:
    """How many items entered the Dask segment, how many came out, and how many wait to enter
    (held by :class:`GroupFrames`); thread-safe."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.entered = 0
        self.left = 0
        self.held = 0
        self.peak = 0

    def hold(self) -> None:
        with self._condition:
            self.held += 1

    def unhold(self) -> None:
        with self._condition:
            self.held -= 1
            self._condition.notify_all()

    def enter(self, held: bool = False) -> None:
        """One more item in the segment (``held``: one of those that waited to enter)."""
        with self._condition:
            self.entered += 1
            self.held -= held
            self.peak = max(self.peak, self.entered - self.left)

    def leave(self) -> None:
        with self._condition:
            self.left += 1
            self._condition.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every item that entered so far, or waits to enter, has come out; False on timeout.

        The items come out in the order they entered, and those waiting enter next, in order.
        """
        with self._condition:
            target = self.entered + self.held
            return self._condition.wait_for(lambda: self.left >= target, timeout)


@dataclass(frozen=True)
class FrameGroup:
    """Frame tasks given in one go (the frames of one StreamDatum or event page) that travel as
    one Dask task (:class:`GroupFrames`); the worker runs each in turn, and ``gather`` emits
    their results one by one, in order."""

    tasks: tuple[FrameTask, ...]

    @property
    def run_uid(self) -> str:
        return self.tasks[0].run_uid

    @property
    def seq_num(self) -> str:
        return f"{self.tasks[0].seq_num}-{self.tasks[-1].seq_num}"


def _pixels(task: FrameTask) -> int | None:
    """The pixels of a task's frames (in memory or by reference), None if not known."""
    if isinstance(task.frames, np.ndarray):
        return task.frames.size
    if isinstance(task.frames, FrameReference):
        return int(np.prod(task.frames.event_shape))
    return None


@dataclass(eq=False)
class _Unit:
    """What :class:`GroupFrames` emits next: a group being filled, or an item that goes alone."""

    items: list
    metadata: list
    pixels: int
    taken: asyncio.Future  # done when its emit starts
    done: asyncio.Future  # done when its emit returned (it entered the Dask segment)
    alone: bool = False  # an item that is no frame task to group, or one too big: its caller waits for done
    open: bool = True  # a group that may take more tasks

    def item(self):
        return self.items[0] if len(self.items) == 1 else FrameGroup(tuple(self.items))


class GroupFrames(Stream):
    """Frame tasks that come in one go, or that wait while the cluster is busy, travel together
    as one :class:`FrameGroup`, up to ``max_pixels`` pixels a group.

    Each small frame sent as a Dask task of its own costs the client, the scheduler and a
    worker as much as its peak finding (a future, its messages, its transitions; about 10 ms
    of CPU in all, measured with ``benchmarks.bench_client``). Here the items wait in order
    for their turn to enter the Dask segment (``in_flight``), and the frame tasks that wait
    together (of one run, with one background) go as one group:

    - the frames of one document (a fast detector's StreamDatum, a flyer's event page): the
      tasks emitted before the event loop's next turn;
    - the frames of a step scan's events given while the segment is full (``max_in_flight``
      reached): a group of the frames that came meanwhile. A producer faster than the
      cluster thus gets larger tasks, so the client keeps up, while a frame that finds the
      segment free goes at once, alone, without waiting for company.

    A frame task returns to its caller once it is queued, unless a full group waits ahead of
    it (the caller then waits for that group to enter the segment: besides the frames of the
    document being given, which its caller holds anyway, at most about two groups' pixels
    wait here). A stop, a problem, a frame with a problem and a task of more than half
    of ``max_pixels`` go alone, after everything before them, and their caller waits until
    they entered the segment (for a stop, ``Pipeline.__call__`` then waits until its run is
    linked). An error emitting a group nobody waits for is logged with its run uid and
    ``seq_num`` range.

    Parameters
    ----------
    upstream : streamz.Stream
        The channel: frame tasks, then a run's problem documents and its stop.
    max_pixels : int
        The most pixels (frames x rows x columns, summed over the group's tasks) of a group;
        a task of more than half of it always goes alone.
    flight : _Flight
        The Dask segment's count: the items waiting here count as held, so a flush waits for them.
    loop : tornado.ioloop.IOLoop
        The Dask client's event loop, where the graph runs.
    """

    def __init__(self, upstream: Stream, *, max_pixels: int, flight: _Flight, loop, **kwargs) -> None:
        self.max_pixels = max_pixels
        self.flight = flight
        self._units: collections.deque[_Unit] = collections.deque()  # waiting for their turn, in order
        self._pumping = False
        super().__init__(upstream, loop=loop, **kwargs)  # the client's loop, where the graph runs

    def update(self, x, who=None, metadata=None):
        pixels = _pixels(x) if isinstance(x, FrameTask) and x.problem is None else None
        last = self._units[-1] if self._units else None
        alone = pixels is None or pixels > self.max_pixels // 2
        if last is not None and (alone or not last.open or x.background is not last.items[0].background
                                 or last.pixels + pixels > self.max_pixels or x.run_uid != last.items[0].run_uid):
            last.open = False
        if alone or last is None or not last.open:
            last = self._add(alone)
        self._retain_refs(metadata)
        last.items.append(x)
        last.metadata += metadata or []
        last.pixels += pixels or 0
        if alone:
            return [last.done]
        if len(self._units) > 1:  # a full group waits ahead: hold the producer until it is on its way
            return [self._units[-2].taken]
        return []

    def _add(self, alone: bool) -> _Unit:
        loop = asyncio.get_running_loop()
        unit = _Unit([], [], 0, loop.create_future(), loop.create_future(), alone=alone, open=not alone)
        self._units.append(unit)
        self.flight.hold()
        if not self._pumping:  # from the loop's next turn: the rest of this burst joins the group
            self._pumping = True
            self.loop.add_callback(self._pump)
        return unit

    async def _pump(self) -> None:
        """Emit the units in turn, each once the one before has entered the Dask segment."""
        unit = None
        try:
            while self._units:
                unit = self._units.popleft()
                unit.taken.set_result(None)
                item = unit.item()
                try:
                    await _gathered(self._emit(item, metadata=unit.metadata))
                except Exception as err:
                    if unit.alone:  # its caller waits: Pipeline.__call__ logs it
                        unit.done.set_exception(err)
                    else:
                        logger.error("run %s seq_num %s: %d frame task(s) could not enter the Dask segment "
                                     "(%s: %s); skipped", *_where(item), len(unit.items), type(err).__name__, err)
                        unit.done.set_result(None)
                else:
                    unit.done.set_result(None)
                finally:
                    self._release_refs(unit.metadata)
                unit = None
        except asyncio.CancelledError:  # the loop is closing: whoever waits is let go
            self.drop([unit] if unit is not None else [])
            raise
        finally:
            self._pumping = False

    def drop(self, also=()) -> None:
        """Give up the units still waiting (the pipeline is closed, or the loop is closing).

        Their callers are not cancelled (a ``CancelledError`` would go up through
        ``Pipeline.__call__`` into a RunEngine): a producer held behind a group goes on, the
        caller of an item sent alone gets :class:`~streamcrystal.errors.PipelineClosedError`,
        which ``Pipeline.__call__`` logs.
        """
        for unit in [*also, *self._units]:
            if not unit.taken.done():
                unit.taken.set_result(None)
            if not unit.done.done():
                if unit.alone:
                    unit.done.set_exception(PipelineClosedError())
                else:
                    unit.done.set_result(None)
        for unit in self._units:  # not emitted: their references and their place in the count go
            self._release_refs(unit.metadata)
            self.flight.unhold()
        self._units.clear()


async def _gathered(waiting: list) -> None:
    await asyncio.gather(*waiting)


class InFlight(Stream):
    """Enter the Dask segment one item at a time: count it, keep it (for resubmission) in the metadata.

    streamz's ``scatter`` is a coroutine per item: the frames of one event page (or one
    StreamDatum), emitted in one go, would race through it and reach the buffer in any
    order. Here the next item enters only once the previous one is in the buffer, so the
    channel stays first-in first-out.

    ``prepare(item)`` (a coroutine) gives what is sent: a task's background is sent to the
    workers once, not with every frame; frames of this host's workers go into a shared memory
    segment; a document sends only its :class:`Place`. The item and what was sent for it ride
    along in the metadata; ``release(sent)`` frees what ``prepare`` made if the item cannot
    enter the channel.
    """

    def __init__(self, upstream: Stream, *, flight: _Flight, prepare: Callable, release: Callable = lambda sent: None,
                 held: bool = False, **kwargs) -> None:
        self.flight = flight
        self.held = held  # every item waited in GroupFrames (counted as held) before it comes here
        self.prepare = prepare
        self.release = release
        self._turn = Lock()  # tornado's: waiters are served first come, first served
        super().__init__(upstream, **kwargs)

    @gen.coroutine
    def update(self, x, who=None, metadata=None):
        with (yield self._turn.acquire()):
            self.flight.enter(held=self.held)
            try:
                sent = yield self.prepare(x)
            except Exception as err:  # the background could not be sent: the frame carries it
                logger.warning("run %s seq_num %s: background not shared (%s: %s); sent with the frame",
                               *_where(x), type(err).__name__, err)
                sent = x
            try:
                result = yield self._emit(sent, metadata=[*(metadata or []), {_CARRIED: x, _SENT: sent}])
            except Exception:  # not in the channel (the client is closed, say): a flush must not wait for it
                self.release(sent)
                self.flight.leave()
                raise
        raise gen.Return(result)


def _heavy(item) -> bool:
    """Whether ``item`` holds arrays (frames shipped, a background not shared): scattered, not put in a task."""
    if isinstance(item, FrameGroup):
        return any(map(_heavy, item.tasks))
    return isinstance(item, FrameTask) and (isinstance(item.frames, np.ndarray) or isinstance(item.background, np.ndarray)
                                            or isinstance(item.frames, (list, tuple)))


class ScatterFrames(_dask_scatter):
    """streamz's ``scatter``, on an explicit client, for the items that hold arrays; tried again
    when a worker dies meanwhile.

    An item without arrays (frames by reference, in a shared memory segment, or a document's
    :class:`Place`) passes unchanged: it travels inside its task (a few hundred bytes), which
    saves a round trip to a worker and one to the scheduler per event. streamz's own scatter
    raises into ``emit`` when the worker it sends to is dying: the event would be lost. Here
    the item is sent again (to a live worker) up to ``attempts`` times, a moment apart,
    before the error goes up.
    """

    def __init__(self, upstream: Stream, *, client: Client, attempts: int = 3, **kwargs) -> None:
        self.client = client
        self.attempts = attempts
        super().__init__(upstream, loop=client.loop, **kwargs)

    @gen.coroutine
    def update(self, x, who=None, metadata=None):
        if not _heavy(x):
            result = yield self._emit(x, metadata=metadata)
            raise gen.Return(result)
        self._retain_refs(metadata)
        try:
            for attempt in range(1, self.attempts + 1):
                try:
                    # a list, so that the item is one piece of data whatever its type; no hash:
                    # equal frames of two events are two pieces of data
                    [future] = yield self.client.scatter([x], asynchronous=True, hash=False)
                    break
                except OSError as err:  # CommClosedError, a timeout: the worker went
                    if attempt == self.attempts:
                        raise
                    logger.warning("run %s seq_num %s: sending to the cluster failed (%s: %s); again",
                                   *_where(_carried(metadata)), type(err).__name__, err)
                    yield gen.sleep(0.2 * attempt)
            result = yield self._emit(future, metadata=metadata)
        finally:
            self._release_refs(metadata)
        raise gen.Return(result)


class SubmitFrames(_dask_map):
    """streamz.dask's ``map``, on an explicit client: one task per item, ``func(item, **kwargs)``.

    Unlike streamz's node, it does not look up ``default_client()`` nor hash the task's
    arguments for a key (``pure=False``: each event is a new task), a document's
    :class:`Place` passes without a task (``gather`` emits the document itself), and a task
    whose frames are in a shared memory segment runs only on a worker of this host
    (``restrict(item)`` gives the hosts, or None for anywhere).
    """

    def __init__(self, upstream: Stream, func: Callable, *, client: Client, restrict: Callable = lambda sent: None,
                 **kwargs) -> None:
        self.client = client
        self.restrict = restrict
        super().__init__(upstream, func, **kwargs)

    def update(self, x, who=None, metadata=None):
        if isinstance(x, Place):
            return self._emit(x, metadata=metadata)
        hosts = self.restrict(_carried(metadata, _SENT))
        where = {} if hosts is None else {"workers": hosts, "allow_other_workers": False}
        future = self.client.submit(self.func, x, **self.kwargs, pure=False, **where)
        return self._emit(future, metadata=metadata)


_CLOSE = object()  # put in the buffer to end its loop


class BufferFrames(_dask_buffer):
    """streamz's ``buffer``, whose loop can be ended (:meth:`DaskFrames.close`), and which
    tells what futures wait in it (:meth:`waiting`).

    streamz's loop runs for good, holding the node and, through its upstreams, the whole
    graph and the background it gave the workers: a pipeline that is dropped would never be
    freed. :class:`GatherResults` gathers the futures that wait here and are already finished
    together with the one it needs (one round trip for several events).
    """

    def __init__(self, upstream: Stream, n: int, **kwargs) -> None:
        self._waiting: dict[str, Future] = {}  # key -> future, from update until the loop emits it
        super().__init__(upstream, n, **kwargs)

    def update(self, x, who=None, metadata=None):
        if isinstance(x, Future):
            self._waiting[x.key] = x
        return super().update(x, who=who, metadata=metadata)

    def waiting(self) -> list[Future]:
        """The futures given to the buffer and not yet taken out, oldest first."""
        return list(self._waiting.values())

    @gen.coroutine
    def cb(self):
        while True:
            x, metadata = yield self.queue.get()
            if x is _CLOSE:
                self._waiting.clear()
                return
            try:
                yield self._emit(x, metadata=metadata)
            finally:
                if isinstance(x, Future):
                    self._waiting.pop(x.key, None)
            self._release_refs(metadata)


def _carried(metadata, key: str = _CARRIED) -> Any:
    """The item (or, with ``key=_SENT``, what was sent for it) that rides along in ``metadata``."""
    return next((m[key] for m in metadata or [] if key in m), None)


class GatherResults(_dask_gather):
    """streamz's ``gather``, made safe: no error stops the stream.

    For each future it gathers a :class:`WorkerResult`, logs its log lines and emits its
    result. A future cancelled because its data went with a worker that died is resubmitted
    (``resubmit(item, sent, ship)`` returns a new future; at most ``attempts`` tries), and so
    is a task whose worker could not map its shared memory segment (then with the frames
    shipped: ``ship=True``); any other error (a task that killed
    ``distributed.scheduler.allowed-failures`` workers, say) makes a skipped frame, logged
    with its run uid and ``seq_num``; an error downstream is logged. Every item leaves the
    segment (``flight.leave``), so a flush never waits for good, and what was made for it
    (a shared memory segment) is released then (``release(sent)``).

    When the future it needs is finished, the finished futures waiting behind it
    (``waiting()``, :meth:`BufferFrames.waiting`; at most ``batch`` in all) are gathered with
    it, in one call: with ``direct_to_workers`` a gather costs a request to the scheduler
    (who has the data) and one to each worker, about 2 ms of the client's CPU, so when the
    workers are ahead of the client, several events share that cost; their results wait here
    until their turn (the order does not change). A batch that fails (a worker died
    meanwhile) is given up, and each future is gathered alone, with the handling above.
    """

    def __init__(self, upstream: Stream, *, client: Client, resubmit: Callable, flight: _Flight,
                 release: Callable = lambda sent: None, attempts: int = 3,
                 waiting: Callable[[], list[Future]] = list, batch: int = 32, **kwargs) -> None:
        self.client = client
        self.resubmit = resubmit
        self.flight = flight
        self.release = release
        self.attempts = attempts
        self.waiting = waiting
        self.batch = batch
        self._ready: dict[str, WorkerResult] = {}  # results gathered ahead of their turn, by key
        self.gathers = 0  # gather calls made (a batch is one)
        super().__init__(upstream, **kwargs)

    @gen.coroutine
    def update(self, x, who=None, metadata=None):
        metadata = metadata or []
        self._retain_refs(metadata)
        item, sent = _carried(metadata), _carried(metadata, _SENT)
        try:
            result = yield self._gather(x, item, sent)
            self.release(sent)  # the result is here: the frames' segment may go before the nodes after gather run
            out = []
            # None: an item that did not enter through in_flight, logged; a group: its tasks' results
            results = [] if result is None else list(result) if isinstance(item, FrameGroup) else [result]
            # the item rides no further: downstream nodes would keep it as current_metadata
            metadata_out = [m for m in metadata if _CARRIED not in m]
            for result in results:
                try:
                    out = yield self._emit(result, metadata=metadata_out)
                except Exception:  # a subscriber that raises must not stop the stream
                    logger.exception("run %s seq_num %s: the nodes after gather failed", *_where(result))
        finally:
            self.release(sent)
            self._release_refs(metadata)
            self.flight.leave()
        raise gen.Return(out)

    async def _gather(self, future, item, sent):
        if isinstance(item, Routed):
            return item  # a stop or a problem: its place in the channel was all that travelled
        ship = False
        for attempt in range(1, self.attempts + 1):
            try:
                if future is None:
                    future = await self.resubmit(item, sent, ship)
                outcome = await self._fetch(future)
                for level, message in outcome.log:
                    logger.log(level, message)
                return outcome.result
            except (FutureCancelledError, OSError, SharedFramesError) as err:  # its data went with a dead worker,
                if item is None or attempt == self.attempts:                   # or it cannot see our segment
                    return _failed(item, err, attempt)
                ship = ship or isinstance(err, SharedFramesError)
                logger.warning("run %s seq_num %s: lost on the cluster (%s: %s); resubmitted",
                               *_where(item), type(err).__name__, err)
                future = None
                await asyncio.sleep(0.2 * (attempt - 1))
            except Exception as err:  # the task raised, or killed its workers
                return _failed(item, err, attempt)


    async def _fetch(self, future: Future) -> WorkerResult:
        """``future``'s result: gathered ahead of its turn, with finished futures waiting behind it, or alone."""
        if future.key in self._ready:
            return self._ready.pop(future.key)
        if future.status == "finished":
            behind = [f for f in self.waiting()
                      if f.status == "finished" and f.key != future.key and f.key not in self._ready]
            if behind:
                behind = behind[:self.batch - 1]
                self.gathers += 1
                try:
                    results = await self.client.gather([future, *behind], asynchronous=True)
                except Exception as err:  # one of them went with a worker: each alone, when its turn comes
                    logger.debug("gathering %d finished futures together failed (%s: %s); one at a time",
                                 len(behind) + 1, type(err).__name__, err)
                else:
                    self._ready.update((f.key, result) for f, result in zip(behind, results[1:]))
                    return results[0]
        self.gathers += 1
        return await self.client.gather(future, asynchronous=True)


def _where(item) -> tuple:
    return (getattr(item, "run_uid", None), getattr(item, "seq_num", None))


def _failed(item, err: Exception, attempts: int) -> FrameResult | tuple[FrameResult, ...] | None:
    """A skipped frame for ``item`` (for a group, one per task), logged."""
    problem = f"frame work failed on the cluster after {attempts} attempt(s): {type(err).__name__}: {err}"
    if isinstance(item, FrameGroup):
        return tuple(_failed(task, err, attempts) for task in item.tasks)
    log_skipped(*_where(item), problem, level=logging.ERROR)
    return None if item is None else skipped_result(item, problem)


class DaskFrames:
    """The Dask side of a parallel pipeline: the client, the bound on work in flight, flush.

    Parameters
    ----------
    client : distributed.Client
        A synchronous client (``asynchronous=False``, the default); the graph runs on its
        event loop.
    max_in_flight : int, optional
        The most items (frames, stops) between entering the Dask segment and leaving it;
        at least 3. Default: twice the cluster's threads, plus one. It also bounds the shared
        memory segments (one per frame task in flight).
    process, locate : callable
        The steps each frame's task runs on a worker, in turn (default those of the serial
        graph's nodes, :mod:`~streamcrystal.graph.steps`; tests wrap them to slow or fail a frame).
    attempts : int
        How many times a frame lost with a worker is submitted before it is skipped.
    shared_memory : bool, optional
        Send frames held in memory (inline event documents) to the workers of this host
        through shared memory (:mod:`streamcrystal.graph.shared`): written once, mapped by the
        worker, no copy through a socket. Default (None): when some workers are on this host
        (their ``host`` in ``scheduler_info()`` is one of this machine's addresses); their tasks
        then run only there, and frames for a cluster without such workers go by Dask's
        transfer. False: always Dask's transfer. True: like None, but logs a warning if no
        worker is on this host.
    group_pixels : int
        Frames given in one go (the frames of one StreamDatum, or of an event page), and
        frames given while ``max_in_flight`` items are in flight, travel as one task of at
        most this many pixels (:class:`GroupFrames`): with small frames, the cost of a task
        (a future, its messages, the scheduler's transitions) is shared by the group. 0: one
        task per frame. Default 2**22 (sixteen 512 x 512 frames, one 2048 x 2048 frame; a
        Dexela's 3072 x 3888 frames always go one by one).
    """

    def __init__(self, client: Client, *, max_in_flight: int | None = None, process: Callable = process_step,
                 locate: Callable = locate_step, attempts: int = 3, shared_memory: bool | None = None,
                 group_pixels: int = 2**22) -> None:
        if not isinstance(client, Client):
            raise TypeError(f"client must be a dask.distributed.Client, got {type(client).__name__}; "
                            "make one with streamcrystal.make_client('local:2')")
        if client.asynchronous:
            raise ValueError("peak_tracking(client=...) needs a synchronous Client (asynchronous=False): the pipeline "
                             "runs on the client's event loop thread and pipe(name, doc) waits for it")
        if client.status not in ("running", "connecting", "newly-created"):
            raise ValueError(f"the Dask client is {client.status!r}; pass a running client")
        if max_in_flight is None:
            max_in_flight = 2 * max(1, sum(client.nthreads().values())) + 1
        if not isinstance(max_in_flight, (int, np.integer)) or max_in_flight < 3:
            raise ValueError(f"max_in_flight must be an integer >= 3 (one item being gathered, one waiting to enter "
                             f"the buffer, at least one in it), got {max_in_flight!r}")
        if shared_memory not in (None, True, False):
            raise ValueError(f"shared_memory must be None (when workers share this host), True or False, "
                             f"got {shared_memory!r}")
        if not client.direct_to_workers:
            logger.info("the Dask client of %s sends each frame to the workers through the scheduler; "
                        "Client(..., direct_to_workers=True) sends it straight (make_client does, for local:N)",
                        client.scheduler.address)
        self.client = client
        self.max_in_flight = int(max_in_flight)
        self.process = process
        self.locate = locate
        self.attempts = attempts
        self.shared_memory = shared_memory
        if not isinstance(group_pixels, (int, np.integer)) or group_pixels < 0:
            raise ValueError(f"group_pixels must be an integer >= 0 (0: one task per frame), got {group_pixels!r}")
        self.group_pixels = int(group_pixels)
        # segments are written again within a run (a new one costs the kernel's zeroing of its
        # pages, more than the copy): at most one per item in flight, free ones unlinked at each stop
        self.segments = SharedSegments(client, keep=self.max_in_flight)
        self._hosts: set[str] | None = None  # the workers' hosts that are this machine (None: not looked yet)
        self._restrict: list[str] | None = None  # those hosts, if some workers are elsewhere
        self._hosts_seen = 0.0
        self._flight = _Flight()
        self._background = None  # the background array the workers hold now
        self._work_node = None  # the node that submits the frames' tasks
        self._buffer_node = None
        self._group_node = None
        self._closed = False

    def describe(self) -> dict:
        """What a provenance records: the scheduler, the bound, whether frames go through shared memory."""
        return {"scheduler": self.client.scheduler.address, "max_in_flight": self.max_in_flight,
                "shared_memory": self.shared_memory is not False, "group_pixels": self.group_pixels}

    def around(self, channel: Stream, locate_options: Mapping, subtrahend: np.ndarray | None, mask=None
               ) -> tuple[Stream, ...]:
        """channel -> group -> in_flight -> scatter -> locate -> buffer -> gather; returns these six nodes.

        ``group`` lets frames given in one go (a StreamDatum's, an event page's) travel as one
        task, up to ``group_pixels`` (:class:`GroupFrames`; None with ``group_pixels=0``).

        ``locate`` submits one Dask task per frame, the serial graph's ``process`` and
        ``locate`` steps in turn (:func:`frame_on_worker`); ``gather`` emits, in the channel's
        order, each frame's result and each stop and problem document after the frames that
        came before it.
        """
        if self._work_node is not None:
            raise ValueError("this DaskFrames is the Dask segment of another pipeline already; make one per pipeline")
        client = self.client
        options = {"process": self.process, "locate": self.locate, "mask": mask, **locate_options}
        if isinstance(mask, np.ndarray):  # a detector's mask goes to every worker once, not with each frame
            [options["mask"]] = client.scatter([mask], broadcast=True, hash=False)
        if subtrahend is not None:  # sent now, so the first frame does not wait for it
            [options["background"]] = client.scatter([subtrahend], broadcast=True, hash=False)
            self._background = subtrahend
        if self.shared_memory is not False:
            self._set_hosts(client.scheduler_info()["workers"])
        group = GroupFrames(channel, max_pixels=self.group_pixels, flight=self._flight, loop=client.loop,
                            stream_name="group") if self.group_pixels else None
        in_flight = InFlight(channel if group is None else group, flight=self._flight, prepare=self._prepare,
                             release=self._release, held=group is not None, stream_name="in_flight")
        scatter = ScatterFrames(in_flight, client=client, attempts=self.attempts, stream_name="scatter")
        locate = SubmitFrames(scatter, frame_on_worker, client=client, restrict=self._hosts_for, **options)
        locate.name = "locate"  # streamz.dask.map would pass stream_name= on to the task
        buffer = BufferFrames(locate, self.max_in_flight - 2, stream_name="buffer")
        gather = GatherResults(buffer, client=client, resubmit=self._resubmit, flight=self._flight,
                               release=self._release, attempts=self.attempts, waiting=buffer.waiting,
                               stream_name="gather")
        self._work_node, self._buffer_node, self._group_node = locate, buffer, group
        return group, in_flight, scatter, locate, buffer, gather

    # -- shared memory ------------------------------------------------------------------------

    def _set_hosts(self, workers: Mapping[str, Mapping]) -> None:
        """Which workers' hosts are this machine (``workers``: ``scheduler_info()["workers"]``)."""
        self._hosts_seen = time.monotonic()
        if not workers:
            return  # no worker yet: look again with a later frame
        hosts = shared_memory_hosts(workers)
        everywhere = {info.get("host") for info in workers.values()}
        self._hosts = hosts
        self._restrict = sorted(hosts) if hosts and hosts != everywhere else None
        if self._restrict:
            logger.info("frames in memory go through shared memory to the workers on %s, the tasks of the others "
                        "get references only", ", ".join(self._restrict))
        if not hosts and self.shared_memory:
            logger.warning("shared_memory=True, but no Dask worker is on this host (workers on %s): frames are sent "
                           "by Dask's transfer", ", ".join(sorted(map(str, everywhere))))

    async def _look_for_hosts(self) -> None:
        """Ask the scheduler for its workers if none was known (at most once a second)."""
        if self._hosts is not None or time.monotonic() - self._hosts_seen < 1.0:
            return
        try:
            identity = await self.client.scheduler.identity(n_workers=-1)
        except Exception as err:  # the frame goes by Dask's transfer
            logger.debug("cannot ask the scheduler for its workers: %s", err)
            self._hosts_seen = time.monotonic()
            return
        self._set_hosts(identity.get("workers", {}))

    def _hosts_for(self, sent) -> list[str] | None:
        """Where the task of ``sent`` may run: this host's workers if its frames are shared."""
        tasks = sent.tasks if isinstance(sent, FrameGroup) else (sent,)
        if any(isinstance(task, FrameTask) and isinstance(task.frames, SharedFrames) for task in tasks):
            return self._restrict
        return None


    def _release(self, sent) -> None:
        """Free the shared memory segment made for ``sent``, if any (idempotent); at a stop,
        unlink the free segments, so that none is left after a run."""
        if isinstance(sent, FrameGroup):
            for task in sent.tasks:
                self._release(task)
        elif isinstance(sent, FrameTask) and isinstance(sent.frames, SharedFrames):
            self.segments.release(sent.frames.name)
        elif isinstance(sent, Place) and sent.name == "stop":
            self.segments.drain()

    def _stop_sharing(self, reason: str) -> None:
        if self._hosts:
            logger.warning("frames are sent by Dask's transfer from now on, not through shared memory: %s", reason)
        self._hosts, self._restrict = set(), None

    # -- what is sent -------------------------------------------------------------------------

    async def _prepare(self, item, share: bool = True):
        """What is sent for ``item``: a task's background is replaced by :data:`SHARED`, frames in
        memory by :class:`~.shared.SharedFrames` when a worker is on this host.

        A background not seen before (a run's new dark mean) is sent to every worker once
        and becomes ``background`` of the ``locate`` node's tasks, for this task and the next
        ones: ``in_flight`` lets one item at a time through, so each task is submitted with
        its own background.
        """
        if isinstance(item, Routed):
            return Place(item.name, item.run_uid)
        if isinstance(item, FrameGroup):  # its tasks share one background (sent once, with the first)
            tasks = [await self._prepare(task, share=False) for task in item.tasks]
            return FrameGroup(await self._share(tasks))  # and one segment
        if not isinstance(item, FrameTask) or item.problem is not None:
            return item
        if item.background is not None:
            if item.background is not self._background:
                [future] = await self.client.scatter([item.background], broadcast=True, hash=False, asynchronous=True)
                self._work_node.kwargs["background"] = future
                self._background = item.background
            item = replace(item, background=SHARED)
        if share:
            [item] = await self._share([item])
        return item

    async def _share(self, tasks: list[FrameTask]) -> tuple[FrameTask, ...]:
        """``tasks`` with their frames in memory in one shared memory segment when a worker is on
        this host, or as they are (logged once) if no segment can be made."""
        sharing = [k for k, task in enumerate(tasks) if task.problem is None and can_share(task.frames)]
        if not sharing or self.shared_memory is False:
            return tuple(tasks)
        await self._look_for_hosts()
        if not self._hosts:
            return tuple(tasks)
        if self._closed:  # a task still on its way to in_flight as the pipeline closed: it will not run
            return tuple(tasks)
        try:
            shared = self.segments.share_many([tasks[k].frames for k in sharing])
        except ValueError:
            if self.segments.closed:  # closed meanwhile, from another thread
                return tuple(tasks)
            raise
        except OSError as err:
            if not getattr(self, "_share_failure_logged", False):
                self._share_failure_logged = True
                logger.warning("run %s seq_num %s: no shared memory segment for the frames (%s); they are sent by "
                               "Dask's transfer while this lasts", *_where(tasks[sharing[0]]), err)
            return tuple(tasks)
        for k, frames in zip(sharing, shared):
            tasks[k] = replace(tasks[k], frames=frames)
        return tuple(tasks)

    async def _resubmit(self, item, sent=None, ship: bool = False):
        """Send a lost item again, whole (its background too: the shared copy may be lost).

        Its frames go through the same shared memory segment if they went that way (it is the
        client's, so it outlived the worker), unless ``ship``: the worker could not map it.
        """
        self._background = None  # share the background anew with the next frame, in case it went too
        if ship:
            self._stop_sharing("a worker could not map a segment")
        elif self._hosts:
            item = self._through_segments(item, sent)
        data = item
        if _heavy(item):
            [data] = await self.client.scatter([item], asynchronous=True, hash=False)
        hosts = self._hosts_for(item)
        where = {} if hosts is None else {"workers": hosts, "allow_other_workers": False}
        options = {key: value for key, value in self._work_node.kwargs.items() if key != "background"}
        return self.client.submit(frame_on_worker, data, **options, pure=False, **where)

    def _through_segments(self, item, sent):
        """``item`` with the frames that went through a shared memory segment still alive going that way again."""
        if isinstance(item, FrameGroup) and isinstance(sent, FrameGroup):
            return FrameGroup(tuple(self._through_segments(task, task_sent)
                                    for task, task_sent in zip(item.tasks, sent.tasks)))
        if isinstance(sent, FrameTask) and isinstance(sent.frames, SharedFrames) \
                and sent.frames.name in self.segments.names():
            return replace(item, frames=sent.frames)
        return item

    @contextmanager
    def entering(self):
        """The context of ``pipe(name, doc)``: streamz's Dask nodes find this client.

        A closed client has stopped its event loop, where the graph runs: rather than wait
        for good, say so (and release the shared memory segments of the frames it had).
        """
        if self._closed:
            raise PipelineClosedError()
        if self.client.status not in ("running", "connecting"):
            self.segments.release_all()
            raise ClientClosedError(self.client.status)
        with self.client.as_current():
            yield

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every item given so far has come out of ``gather``; False on timeout."""
        return self._flight.wait(timeout)

    def close(self) -> None:
        """End the buffer's loop on the client's event loop, let the workers drop the background,
        and unlink the shared memory segments.

        Items still in flight are given up; call :meth:`flush` first to keep them.
        """
        if self._closed:
            return
        self._closed = True
        if self._work_node is not None:
            self._work_node.kwargs.pop("background", None)
            if self.client.status == "running":  # after the items queued before it
                if self._group_node is not None:  # the items waiting to enter are given up
                    self.client.loop.add_callback(self._group_node.drop)
                self.client.loop.add_callback(self._buffer_node.queue.put, (_CLOSE, []))
        self._background = None
        self.segments.close()

    @property
    def in_flight(self) -> int:
        """Items between ``in_flight`` and the end of ``gather`` now."""
        return self._flight.entered - self._flight.left

    @property
    def peak_in_flight(self) -> int:
        """The most items that were in flight at once."""
        return self._flight.peak

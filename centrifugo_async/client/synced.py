"""A centrifuge-python subscription that keeps the app's objects in sync, in version order.

The initial-sync dance, done once on start and again whenever recovery fails:

1. subscribe first, and buffer the publications that arrive;
2. load the current state (the app's ``load()``: keys and their versions);
3. hand the snapshot to the version gate (``VersionGate.replace``);
4. replay the buffered envelopes through the gate, then pass live ones through it,
   and report ``on_ready``.

Every update reaches the app only when it is newer than the version the app holds,
so the snapshot and the stream may overlap freely. Publications are queued by the
SDK callbacks (which stay quick) and handled in order by one worker task, so a slow
``load()`` or app callback never blocks the connection's read loop. The queue is
bounded: beyond ``max_buffered`` waiting publications the helper drops them and
reloads instead (reason ``"buffer-overflow"``).

``reload_key`` is the race-free way to reload one object (after an ``"evicted"``
drop): the app fetches, the helper decides through the gate, in delivery order,
whether what was fetched is newer than what the app holds, and only then lets the
app apply it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import attrs

from .._retry import Backoff
from ..exceptions import CentrifugoAsyncError, EnvelopeDecodeError, SubscriptionLost
from ..protocol.envelope import Envelope
from .data import envelope_from_data
from .gate import Decision, VersionGate

if TYPE_CHECKING:
    from centrifuge import (  # type: ignore[import-untyped]
        Client,
        JoinContext,
        LeaveContext,
        PublicationContext,
        SubscribedContext,
        SubscribingContext,
        Subscription,
        SubscriptionErrorContext,
        UnsubscribedContext,
    )

__all__ = [
    "ErrorCallback",
    "FetchCallback",
    "Fetched",
    "LoadResult",
    "ReadyCallback",
    "ResyncCallback",
    "SyncState",
    "SyncedSubscription",
    "UpdateCallback",
    "Versioned",
]

logger = logging.getLogger("centrifugo_async.client")


class Versioned(Protocol):
    """Anything with a ``key`` and a ``version`` (an ORM row, an ``Envelope``...).

    An item that also has a true ``deleted`` attribute is a tombstone: the backend
    reports that the object is gone as of ``version``.
    """

    @property
    def key(self) -> str: ...

    @property
    def version(self) -> int: ...


LoadResult = Iterable[tuple[str, int] | tuple[str, int, bool] | Versioned] | Mapping[str, int]
"""What ``load()`` returns: ``(key, version)`` pairs, ``(key, version, deleted)``
triples, objects with ``.key`` and ``.version`` (and optionally ``.deleted``), or a
mapping ``{key: version}``."""


@attrs.frozen
class Fetched:
    """What ``reload_key``'s ``fetch`` returns: one object as the backend has it now.

    ``version`` is the object's version, ``deleted`` says it is a tombstone (the
    backend keeps deleted rows with their version). An object that does not exist
    and whose deletion version is unknown is ``Fetched(None, apply, deleted=True)``.

    ``apply`` writes the fetched object into the app's store (or removes it). The
    helper calls it only when the fetched version is newer than the one the app
    holds, in delivery order with the live updates, so a reload never moves the
    store backwards. It may be a plain function or a coroutine function.
    """

    version: int | None
    apply: Callable[[], object]
    deleted: bool = False

    def __attrs_post_init__(self) -> None:
        if self.version is None and not self.deleted:
            raise ValueError("Fetched without a version must be deleted=True (absent object)")


UpdateCallback = Callable[[Envelope[Any], Decision], object]
ResyncCallback = Callable[[str], object]
ReadyCallback = Callable[[], object]
ErrorCallback = Callable[[BaseException, str], object]
FetchCallback = Callable[[str], Awaitable[Fetched]]
"""Every callback may be a plain function or a coroutine function."""

SyncState = Literal["closed", "loading", "live", "resyncing", "unsubscribed"]


class _SyncRequest:
    __slots__ = ("reason",)

    def __init__(self, reason: str | None) -> None:
        self.reason = reason  # None: the initial sync


class _ReadyMarker:
    """Queued right after a snapshot is adopted: the items before it are the buffer."""

    __slots__ = ("generation",)

    def __init__(self, generation: int) -> None:
        self.generation = generation


class _KeyReload:
    """The ``reload_key`` calls of one key in flight, and the publications held meanwhile."""

    __slots__ = ("applied", "held", "runs")

    def __init__(self) -> None:
        self.runs = 0
        self.applied = 0  # results applied since the first of these calls started
        self.held: list[Envelope[Any]] = []


class _FetchedItem:
    """A finished ``reload_key`` fetch, applied by the worker in delivery order.

    ``loads`` and ``applied`` are the session's snapshot count and the key's
    applied-results count when the call started: if either moved since, the app
    may hold something newer than this read, which only the gate can tell.
    """

    __slots__ = ("applied", "fetched", "key", "loads", "result")

    def __init__(self, key: str, loads: int, applied: int) -> None:
        self.key = key
        self.loads = loads
        self.applied = applied
        self.fetched: Fetched | None = None  # None: the fetch failed or was cancelled
        self.result: asyncio.Future[bool] | None = None


_STOP: Final = object()


class _Session:
    """What one ``start()`` ... ``close()`` run owns: a new one on every start."""

    def __init__(self, subscription: Subscription, events: _Events, owned: bool) -> None:
        self.subscription = subscription
        self.events = events
        self.owned = owned
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters: list[asyncio.Future[None]] = []
        self.live = False
        self.live_once = False
        self.lost: SubscriptionLost | None = None
        self.generation = 0
        self.pending_syncs = 0
        self.superseded = asyncio.Event()
        self.skipping = False
        self.load_task: asyncio.Future[LoadResult] | None = None
        self.publications = 0
        self.covered = 0  # the next publications queued are in the snapshot being loaded
        self.loads = 0
        self.reloading: dict[str, _KeyReload] = {}


class _Events:
    """The handler given to centrifuge-python: only queues, never raises.

    It implements every ``SubscriptionEventHandler`` method of centrifuge-python
    0.7, and answers any event a later SDK adds with a no-op, so it does not need
    the SDK at import time. Attached to a subscription the app created, it passes
    every event on to the handler the subscription had.
    """

    def __init__(self, owner: SyncedSubscription, forward: object = None) -> None:
        self._owner: SyncedSubscription | None = owner
        self.forward = forward
        self._subscribed_once = False

    def detach(self) -> None:
        self._owner = None

    def mark_subscribed(self) -> None:
        """The subscription was already subscribed when the helper attached to it."""
        self._subscribed_once = True

    async def _pass_on(self, name: str, ctx: object) -> None:
        handler = getattr(self.forward, name, None)
        if handler is None:
            return
        try:
            result = handler(ctx)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            owner = self._owner
            if owner is not None:
                owner._report_soon(exc, "subscription")

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        owner = self._owner
        if owner is not None:
            try:
                owner._subscribed()
                if not self._subscribed_once:
                    self._subscribed_once = True
                    owner._request_sync(None)
                elif not ctx.recovered:
                    # A failed recovery (or a resubscribe that did not even try)
                    # may have skipped publications: only a reload repairs that.
                    reason = "recovery-failed" if ctx.was_recovering else "resubscribed"
                    owner._request_sync(reason)
            except Exception as exc:
                owner._report_soon(exc, "subscription")
        await self._pass_on("on_subscribed", ctx)

    async def on_publication(self, ctx: PublicationContext) -> None:
        owner = self._owner
        if owner is not None:
            try:
                owner._publication(ctx.pub.data)
            except Exception as exc:
                owner._report_soon(exc, "publication")
        await self._pass_on("on_publication", ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        owner = self._owner
        if owner is not None:
            try:
                owner._lost(SubscriptionLost(int(ctx.code), str(ctx.reason)))
            except Exception as exc:
                owner._report_soon(exc, "unsubscribed")
        await self._pass_on("on_unsubscribed", ctx)

    async def on_error(self, ctx: SubscriptionErrorContext) -> None:
        owner = self._owner
        if owner is not None:
            error = getattr(ctx, "error", None)
            if not isinstance(error, BaseException):
                error = CentrifugoAsyncError(f"subscription error: {ctx!r}")
            owner._report_soon(error, "subscription")
        await self._pass_on("on_error", ctx)

    async def on_subscribing(self, ctx: SubscribingContext) -> None:
        await self._pass_on("on_subscribing", ctx)

    async def on_join(self, ctx: JoinContext) -> None:
        await self._pass_on("on_join", ctx)

    async def on_leave(self, ctx: LeaveContext) -> None:
        await self._pass_on("on_leave", ctx)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[None]]:
        if not name.startswith("on_"):
            raise AttributeError(name)

        async def pass_on(ctx: object = None, *args: object, **kwargs: object) -> None:
            await self._pass_on(name, ctx)

        return pass_on


def _snapshot_entries(result: object) -> list[tuple[str, int, bool]]:
    if isinstance(result, Mapping):
        items: Iterable[object] = result.items()
    elif isinstance(result, Iterable) and not isinstance(result, str | bytes):
        items = result
    else:
        raise TypeError(f"load() must return an iterable, not {type(result).__name__}")
    entries = []
    for item in items:
        deleted: object = False
        if isinstance(item, tuple) and len(item) in (2, 3):
            key, version, *rest = item
            deleted = rest[0] if rest else False
        else:
            try:
                key, version = item.key, item.version  # type: ignore[attr-defined]
            except AttributeError:
                raise TypeError(
                    "load() items must be (key, version) pairs, (key, version, deleted) "
                    f"triples or have .key and .version, not {type(item).__name__}"
                ) from None
            deleted = getattr(item, "deleted", False)
        if not isinstance(key, str) or not key:
            raise TypeError(f"load() gave a key that is not a non-empty str: {key!r}")
        entries.append((key, version, bool(deleted)))
    return entries


class SyncedSubscription:
    """Subscribe to one channel of envelopes and keep the app's state current.

    ``channel`` is a channel name (the helper creates the subscription with
    ``recoverable=True, positioned=True`` and removes it on ``close()``), or a
    centrifuge-python ``Subscription`` the app created itself, e.g. with a
    ``token``, ``get_token``, ``data`` or ``delta`` (create it ``recoverable`` and
    ``positioned``, or every resubscribe costs a reload). The helper takes over its
    event handler and passes every event on to the handler it had; ``close()``
    gives the handler back and leaves the subscription as it is.

    ``load`` is an async callable returning the app's current state (see
    ``LoadResult``); it must read state *after* the subscription is established,
    which the helper guarantees by calling it from ``on_subscribed``, and never an
    older state than that (no lagging replica). A load that a newer sync
    supersedes, or that ``close()`` interrupts, is cancelled (``CancelledError`` is
    raised inside it) so it stops writing into the app's store.

    Callbacks (each optional, each a function or a coroutine function, all called
    in delivery order from one task):

    - ``on_update(envelope, decision)``: apply this update (``decision.reason`` is
      ``"new"`` or ``"newer"``);
    - ``on_delete(envelope, decision)``: the object ``envelope.key`` is deleted:
      remove it (the gate keeps a tombstone, so an older update of it is dropped);
    - ``on_drop(envelope, decision)``: the gate dropped it (``"duplicate"``,
      ``"stale"``, or ``"evicted"``: reload that object with ``reload_key``);
    - ``on_resync(reason)``: the state is being reloaded (``"recovery-failed"``,
      ``"resubscribed"``, ``"buffer-overflow"`` or the reason given to
      ``request_resync()``); ``load`` is called next;
    - ``on_ready()``: a sync (initial or resync) finished and the publications
      buffered meanwhile were applied; the state is live;
    - ``on_error(exc, context)``: something went wrong and was skipped. Contexts:
      ``"publication"`` (not a valid envelope), ``"load"`` (retried with backoff),
      ``"reload_key"`` (a fetch or an ``apply`` failed),
      ``"on_update"``/``"on_delete"``/``"on_drop"``/``"on_resync"``/``"on_ready"``
      (that callback raised), ``"subscription"`` (the SDK reported an error, or the
      app's own handler of an attached subscription raised), ``"unsubscribed"``
      (``SubscriptionLost``), ``"close"``, ``"worker"`` (a bug in this helper).
      Without ``on_error`` they are logged.

    Nothing is ever raised into centrifuge-python.
    """

    def __init__(
        self,
        client: Client,
        channel: str | Subscription,
        *,
        load: Callable[[], Awaitable[LoadResult]],
        on_update: UpdateCallback | None = None,
        on_delete: UpdateCallback | None = None,
        on_drop: UpdateCallback | None = None,
        on_resync: ResyncCallback | None = None,
        on_ready: ReadyCallback | None = None,
        on_error: ErrorCallback | None = None,
        gate: VersionGate | None = None,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        max_buffered: int = 10_000,
    ) -> None:
        if retry_initial <= 0 or retry_max < retry_initial:
            raise ValueError("need 0 < retry_initial <= retry_max")
        if max_buffered < 1:
            raise ValueError("max_buffered must be >= 1")
        self.client = client
        """The centrifuge-python ``Client`` the subscription belongs to."""
        self._given: Subscription | None = None if isinstance(channel, str) else channel
        self.channel: str = channel if isinstance(channel, str) else channel.channel
        """The channel of envelopes this helper follows."""
        self.gate = gate if gate is not None else VersionGate()
        """The ``VersionGate`` that decides every update (pass your own with ``gate=``)."""
        self.max_buffered = max_buffered
        """The most publications waiting for the worker; beyond it they are dropped
        and the state reloaded (reason ``"buffer-overflow"``)."""
        self._load = load
        self._on_update = on_update
        self._on_delete = on_delete
        self._on_drop = on_drop
        self._on_resync = on_resync
        self._on_ready = on_ready
        self._on_error = on_error
        self._load_backoff = Backoff(initial=retry_initial, cap=retry_max)
        self._session: _Session | None = None
        self._background: set[asyncio.Task[None]] = set()

    # -- public API ---------------------------------------------------------------

    @property
    def state(self) -> SyncState:
        """``"loading"`` until the first sync is done, then ``"live"``, ``"resyncing"``
        during a reload, ``"unsubscribed"`` once the server ended the subscription,
        ``"closed"`` before ``start()`` and after ``close()``."""
        session = self._session
        if session is None:
            return "closed"
        if session.lost is not None:
            return "unsubscribed"
        if session.live:
            return "live"
        return "resyncing" if session.live_once else "loading"

    @property
    def ready(self) -> bool:
        """True while the state is live: a sync finished and nothing is being reloaded."""
        return self.state == "live"

    @property
    def buffered(self) -> int:
        """Items waiting for the worker: publications that arrive during a load wait here."""
        session = self._session
        return session.queue.qsize() if session is not None else 0

    @property
    def subscription(self) -> Subscription | None:
        """The centrifuge-python ``Subscription`` while started."""
        session = self._session
        return session.subscription if session is not None else None

    @property
    def events(self) -> _Events | None:
        """The event handler given to the SDK while started (for tests and tooling)."""
        session = self._session
        return session.events if session is not None else None

    async def start(self) -> None:
        """Subscribe, load, replay; return once the first sync is done (state live).

        A ``load()`` that fails is retried with jittered exponential backoff (and
        reported to ``on_error``), so bound the wait with ``asyncio.timeout`` if
        needed. If ``start`` fails or is cancelled, the helper is closed again and
        can be started anew. Raises ``SubscriptionLost`` when the server ends the
        subscription before the first sync.
        """
        if self._session is not None:
            raise RuntimeError(f"{self.channel}: already started")
        given = self._given
        if given is None:
            events = _Events(self)
            sub = self.client.new_subscription(
                self.channel, events=events, recoverable=True, positioned=True
            )
        else:
            sub = given
            events = _Events(self, forward=sub.events)
        session = _Session(sub, events, owned=given is None)
        self._session = session
        session.worker = asyncio.create_task(
            self._run(session), name=f"centrifugo-async sync {self.channel}"
        )
        try:
            if given is not None:
                sub.events = events
                if _state_name(sub) == "subscribed":
                    events.mark_subscribed()
                    self._request_sync(None)
            if _state_name(sub) != "subscribed":
                await sub.subscribe()
            await session.started
        except BaseException:
            await self.close()
            raise

    async def wait_ready(self) -> None:
        """Return once the state is live (at once if it is).

        Raises ``SubscriptionLost`` if the subscription ends, or the helper is
        closed, first; ``RuntimeError`` when it is not started.
        """
        session = self._session
        if session is None:
            raise RuntimeError(f"{self.channel}: not started")
        if session.lost is not None:
            raise session.lost
        if session.live:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        session.waiters.append(waiter)
        await waiter

    def request_resync(self, reason: str = "manual") -> None:
        """Reload the whole state after the updates already queued (e.g. after the
        app failed to apply one). A load in progress is cancelled and redone."""
        if self._session is not None:
            self._request_sync(reason)

    async def reload_key(self, key: str, fetch: FetchCallback) -> bool:
        """Reload one object without ever moving the app's store backwards.

        ``fetch(key)`` reads the object from the backend and returns a ``Fetched``
        (its version and an ``apply`` that writes it into the store). The helper
        then decides, in delivery order and through the gate, whether the fetched
        version is newer than what the app holds; only then does it call
        ``apply``. Publications of ``key`` that arrive during the fetch wait and
        are checked against the fetched version afterwards. Overlapping reloads of
        one key, or a reload racing a full resync, can therefore land in any order:
        an older result is simply not applied.

        Returns True when ``apply`` was called (and did not raise). A failing
        ``fetch`` or ``apply`` is reported to ``on_error`` (``"reload_key"``) and
        returns False. May be awaited from a
        callback (``on_drop``), where it applies the result itself.
        """
        session = self._session
        if session is None:
            raise RuntimeError(f"{self.channel}: not started")
        in_worker = asyncio.current_task() is session.worker
        reload = session.reloading.setdefault(key, _KeyReload())
        reload.runs += 1
        item = _FetchedItem(key, session.loads, reload.applied)
        handed_over = False
        try:
            try:
                fetched = await fetch(key)
                if not isinstance(fetched, Fetched):
                    raise TypeError(
                        f"reload_key's fetch must return a Fetched, not {type(fetched).__name__}"
                    )
                item.fetched = fetched
            except Exception as exc:
                await self._report(exc, "reload_key")
            if self._session is not session:
                return False
            handed_over = True
            if in_worker:
                return await self._apply_fetched(session, item)
            item.result = asyncio.get_running_loop().create_future()
            session.queue.put_nowait(item)
            return await item.result
        finally:
            if not handed_over and self._session is session:
                # Cancelled during the fetch: let the worker release the key.
                item.fetched = None
                session.queue.put_nowait(item)

    async def close(self) -> None:
        """Stop following the channel and stop the worker.

        A subscription the helper created is unsubscribed and removed from the
        client; one the app passed in gets its event handler back and stays as it
        is. Idempotent, never raises (problems go to ``on_error`` with
        ``"close"``). May be called from a callback.
        """
        session = self._session
        if session is None:
            return
        self._session = None
        session.events.detach()
        lost = SubscriptionLost(0, "closed")
        if not session.started.done():
            session.started.set_exception(SubscriptionLost(0, "closed before the first sync"))
        _fail_waiters(session, lost)
        sub = session.subscription
        if session.owned:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                await self._report(exc, "close")
            try:
                self.client.remove_subscription(sub)
            except Exception as exc:
                await self._report(exc, "close")
        elif sub.events is session.events:
            sub.events = session.events.forward
        worker = session.worker
        if worker is not None:
            if worker is asyncio.current_task():
                # Called from a callback: the worker ends after this item (and
                # skips whatever is still queued).
                session.queue.put_nowait(_STOP)
            else:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
        for task in list(self._background):
            task.cancel()

    # -- SDK side (called from _Events: quick, never raising) --------------------

    def _request_sync(self, reason: str | None) -> None:
        session = self._session
        if session is None:
            return
        session.pending_syncs += 1
        session.superseded.set()
        if session.load_task is not None:
            session.load_task.cancel()  # it would be redone: stop it writing
        session.queue.put_nowait(_SyncRequest(reason))

    def _publication(self, data: object) -> None:
        session = self._session
        if session is None:
            return
        if session.publications >= self.max_buffered:
            self._overflow(session)
        session.publications += 1
        session.queue.put_nowait(data)

    def _overflow(self, session: _Session) -> None:
        """Too much waits: drop every queued publication and reload instead.

        The reload's snapshot is read after all of them, so nothing is lost. A
        finished ``reload_key`` fetch is kept (the gate still judges it), a queued
        sync request is replaced by this one.
        """
        kept: list[_FetchedItem] = []
        while not session.queue.empty():
            item = session.queue.get_nowait()
            if isinstance(item, _FetchedItem):
                kept.append(item)
            elif isinstance(item, _SyncRequest):
                session.pending_syncs -= 1
        session.publications = session.covered = 0
        for reload in session.reloading.values():
            reload.held.clear()
        self._request_sync("buffer-overflow")
        for item in kept:
            session.queue.put_nowait(item)

    def _subscribed(self) -> None:
        session = self._session
        if session is not None:
            session.lost = None

    def _lost(self, error: SubscriptionLost) -> None:
        session = self._session
        if session is None:
            return
        session.lost = error
        _fail_waiters(session, error)
        if not session.started.done():
            session.started.set_exception(error)
        elif error.code != 0:  # 0: the app unsubscribed it on purpose
            self._report_soon(error, "unsubscribed")

    def _report_soon(self, exc: BaseException, context: str) -> None:
        task = asyncio.get_running_loop().create_task(self._report(exc, context))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- worker --------------------------------------------------------------------

    async def _run(self, session: _Session) -> None:
        queue = session.queue
        while True:
            item = await queue.get()
            if item is _STOP or self._session is not session:  # closed
                return
            try:
                if isinstance(item, _SyncRequest):
                    session.pending_syncs -= 1
                    if session.pending_syncs > 0:
                        session.skipping = True  # a later sync covers this one
                    else:
                        await self._sync(item.reason, session)
                elif isinstance(item, _ReadyMarker):
                    if item.generation == session.generation:
                        await self._become_live(session)
                elif isinstance(item, _FetchedItem):
                    await self._apply_fetched(session, item)
                else:
                    session.publications -= 1
                    if session.covered > 0:
                        session.covered -= 1
                    elif not session.skipping:
                        await self._deliver(session, item)
            except Exception as exc:  # a bug here must not stop the updates
                await self._report(exc, "worker")

    async def _sync(self, reason: str | None, session: _Session) -> None:
        session.skipping = False
        session.superseded.clear()
        session.generation += 1
        generation = session.generation
        session.live = False
        if reason is not None:
            await self._call("on_resync", self._on_resync, reason)
        if not await self._load_snapshot(session):
            if self._session is session:
                # Superseded: the next sync request is queued; what is queued
                # before it is covered by that sync's snapshot.
                session.skipping = True
            return
        # The publications queued so far arrived during the load: they are the
        # buffer, replayed through the gate before the state counts as live.
        session.queue.put_nowait(_ReadyMarker(generation))

    async def _load_snapshot(self, session: _Session) -> bool:
        """Load the app's state and hand it to the gate, retrying with backoff until
        it works.

        False when a newer sync request supersedes this one, or the helper was
        closed (or restarted) meanwhile.
        """
        async for _ in self._load_backoff.attempts(session.superseded):
            if self._session is not session:
                return False
            # What is queued now arrived before this call: the snapshot, read after
            # it, has it. Replayed after it, an update of an object the snapshot no
            # longer lists (deleted) would bring it back.
            session.covered = session.publications
            task: asyncio.Future[LoadResult] = asyncio.ensure_future(self._load())
            session.load_task = task
            try:
                entries = _snapshot_entries(await task)
                if self._session is not session or session.pending_syncs > 0:
                    return False
                self.gate.replace(entries)  # validates everything before changing anything
                session.loads += 1
                return True
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the worker itself is being stopped
                return False  # superseded: _request_sync cancelled the load
            except Exception as exc:
                await self._report(exc, "load")
            finally:
                session.load_task = None
        return False

    async def _become_live(self, session: _Session) -> None:
        session.live = True
        session.live_once = True
        await self._call("on_ready", self._on_ready)
        if not session.started.done():
            session.started.set_result(None)
        waiters, session.waiters = session.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _deliver(self, session: _Session, data: object) -> None:
        try:
            envelope = envelope_from_data(data)
        except EnvelopeDecodeError as exc:
            await self._report(exc, "publication")
            return
        await self._decide(session, envelope)

    async def _decide(self, session: _Session, envelope: Envelope[Any]) -> None:
        reload = session.reloading.get(envelope.key)
        if reload is not None:
            reload.held.append(envelope)
            return
        decision = self.gate.accept(envelope)
        if not decision.accepted:
            await self._call("on_drop", self._on_drop, envelope, decision)
        elif envelope.deleted:
            await self._call("on_delete", self._on_delete, envelope, decision)
        else:
            await self._call("on_update", self._on_update, envelope, decision)

    async def _apply_fetched(self, session: _Session, item: _FetchedItem) -> bool:
        """Apply a fetch if it is newer than what the app holds; then release the key.

        When the gate does not know the key (evicted), or the fetch has no version,
        only a read taken after everything the app applied since the call can be
        trusted: no snapshot adopted and none of the key's results applied since.
        """
        reload = session.reloading[item.key]
        applied = False
        fetched = item.fetched
        try:
            fresh = item.loads == session.loads and item.applied == reload.applied
            if fetched is None or session.skipping:
                advanced = False
            elif fetched.version is None:
                advanced = fresh
                if fresh:
                    self.gate.forget(item.key)  # gone at an unknown version
            elif fresh or self.gate.version(item.key) is not None:
                advanced = self.gate.seed(item.key, fetched.version, deleted=fetched.deleted)
            else:
                advanced = False
            if fetched is not None and advanced:
                reload.applied += 1
                applied = await self._call("reload_key", fetched.apply)
        finally:
            reload.runs -= 1
            if reload.runs == 0:
                del session.reloading[item.key]
                for envelope in reload.held:
                    await self._decide(session, envelope)
            if item.result is not None and not item.result.done():
                item.result.set_result(applied)
        return applied

    async def _call(self, name: str, callback: Callable[..., object] | None, *args: object) -> bool:
        """Run one of the app's callbacks; True unless it raised (then it is reported)."""
        if callback is None:
            return True
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            await self._report(exc, name)
            return False
        return True

    async def _report(self, exc: BaseException, context: str) -> None:
        if self._on_error is None:
            logger.error("%s: %s error", self.channel, context, exc_info=exc)
            return
        try:
            result = self._on_error(exc, context)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception(
                "%s: on_error raised while reporting a %s error", self.channel, context
            )


def _state_name(subscription: Subscription) -> str:
    state = getattr(subscription, "state", None)
    return str(getattr(state, "value", state))


def _fail_waiters(session: _Session, error: BaseException) -> None:
    waiters, session.waiters = session.waiters, []
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(error)

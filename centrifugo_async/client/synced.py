"""A centrifuge-python subscription that keeps the app's objects in sync, in version order.

The initial-sync dance, done once on start and again whenever recovery fails:

1. subscribe first, and buffer the publications that arrive;
2. load the current state (the app's ``load()``: keys and their versions);
3. seed the version gate with it;
4. replay the buffered envelopes through the gate, then pass live ones through it.

Every update reaches the app only when it is newer than the version the app holds,
so the snapshot and the stream may overlap freely. Publications are queued by the
SDK callbacks (which stay quick) and handled in order by one worker task, so a slow
``load()`` or app callback never blocks the connection's read loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

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
    "LoadResult",
    "ReadyCallback",
    "ResyncCallback",
    "SyncedSubscription",
    "UpdateCallback",
    "Versioned",
]

logger = logging.getLogger("centrifugo_async.client")


class Versioned(Protocol):
    """Anything with a ``key`` and a ``version`` (an ORM row, an ``Envelope``...)."""

    @property
    def key(self) -> str: ...

    @property
    def version(self) -> int: ...


LoadResult = Iterable[tuple[str, int] | Versioned] | Mapping[str, int]
"""What ``load()`` returns: ``(key, version)`` pairs, objects with ``.key`` and
``.version``, or a mapping ``{key: version}``."""

UpdateCallback = Callable[[Envelope[Any], Decision], object]
ResyncCallback = Callable[[str], object]
ReadyCallback = Callable[[], object]
ErrorCallback = Callable[[BaseException, str], object]
"""Every callback may be a plain function or a coroutine function."""


class _SyncRequest:
    __slots__ = ("reason",)

    def __init__(self, reason: str | None) -> None:
        self.reason = reason  # None: the initial sync


_STOP: Final = object()


class _Events:
    """The handler given to centrifuge-python: only queues, never raises.

    It implements every ``SubscriptionEventHandler`` method of centrifuge-python
    0.7, and answers any event a later SDK adds with a no-op, so it does not need
    the SDK at import time.
    """

    def __init__(self, owner: SyncedSubscription) -> None:
        self._owner: SyncedSubscription | None = owner
        self._subscribed_once = False

    def detach(self) -> None:
        self._owner = None

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        owner = self._owner
        if owner is None:
            return
        try:
            if not self._subscribed_once:
                self._subscribed_once = True
                owner._enqueue(_SyncRequest(None))
            elif not ctx.recovered:
                # A failed recovery (or a resubscribe that did not even try)
                # may have skipped publications: only a reload repairs that.
                reason = "recovery-failed" if ctx.was_recovering else "resubscribed"
                owner._enqueue(_SyncRequest(reason))
        except Exception as exc:
            owner._report_soon(exc, "subscription")

    async def on_publication(self, ctx: PublicationContext) -> None:
        owner = self._owner
        if owner is None:
            return
        try:
            owner._enqueue(ctx.pub.data)
        except Exception as exc:
            owner._report_soon(exc, "publication")

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        owner = self._owner
        if owner is None:
            return
        try:
            owner._lost(SubscriptionLost(int(ctx.code), str(ctx.reason)))
        except Exception as exc:
            owner._report_soon(exc, "unsubscribed")

    async def on_error(self, ctx: SubscriptionErrorContext) -> None:
        owner = self._owner
        if owner is None:
            return
        error = getattr(ctx, "error", None)
        if not isinstance(error, BaseException):
            error = CentrifugoAsyncError(f"subscription error: {ctx!r}")
        owner._report_soon(error, "subscription")

    async def on_subscribing(self, ctx: SubscribingContext) -> None:
        return None

    async def on_join(self, ctx: JoinContext) -> None:
        return None

    async def on_leave(self, ctx: LeaveContext) -> None:
        return None

    def __getattr__(self, name: str) -> Callable[..., Awaitable[None]]:
        if not name.startswith("on_"):
            raise AttributeError(name)

        async def ignore(*args: object, **kwargs: object) -> None:
            return None

        return ignore


def _seed_pairs(result: object) -> list[tuple[str, int]]:
    if isinstance(result, Mapping):
        items: Iterable[object] = result.items()
    elif isinstance(result, Iterable) and not isinstance(result, str | bytes):
        items = result
    else:
        raise TypeError(f"load() must return an iterable, not {type(result).__name__}")
    pairs = []
    for item in items:
        if isinstance(item, tuple) and len(item) == 2:
            key, version = item
        else:
            try:
                key, version = item.key, item.version  # type: ignore[attr-defined]
            except AttributeError:
                raise TypeError(
                    "load() items must be (key, version) pairs or have .key and .version, "
                    f"not {type(item).__name__}"
                ) from None
        if not isinstance(key, str) or not key:
            raise TypeError(f"load() gave a key that is not a non-empty str: {key!r}")
        pairs.append((key, version))
    return pairs


class SyncedSubscription:
    """Subscribe to one channel of envelopes and keep the app's state current.

    ``load`` is an async callable returning the app's current state as
    ``(key, version)`` pairs, objects with ``.key``/``.version``, or a
    ``{key: version}`` mapping; it must read state *after* the subscription is
    established, which the helper guarantees by calling it from ``on_subscribed``.

    Callbacks (each optional, each a function or a coroutine function, all called
    in delivery order from one task):

    - ``on_update(envelope, decision)``: apply this update (``decision.reason`` is
      ``"new"`` or ``"newer"``);
    - ``on_drop(envelope, decision)``: the gate dropped it (``"duplicate"``,
      ``"stale"``, or ``"evicted"``: reload that object, then
      ``gate.seed(key, version)``);
    - ``on_resync(reason)``: the state is being reloaded (``"recovery-failed"``,
      ``"resubscribed"`` or the reason given to ``request_resync()``); ``load`` is
      called next;
    - ``on_ready()``: a sync (initial or resync) finished, buffered updates follow;
    - ``on_error(exc, context)``: something went wrong and was skipped. Contexts:
      ``"publication"`` (not a valid envelope), ``"load"`` (retried with backoff),
      ``"on_update"``/``"on_drop"``/``"on_resync"``/``"on_ready"`` (that callback
      raised), ``"subscription"`` (the SDK reported an error), ``"unsubscribed"``
      (``SubscriptionLost``), ``"close"``, ``"worker"`` (a bug in this helper).
      Without ``on_error`` they are logged.

    Nothing is ever raised into centrifuge-python.
    """

    def __init__(
        self,
        client: Client,
        channel: str,
        *,
        load: Callable[[], Awaitable[LoadResult]],
        on_update: UpdateCallback | None = None,
        on_drop: UpdateCallback | None = None,
        on_resync: ResyncCallback | None = None,
        on_ready: ReadyCallback | None = None,
        on_error: ErrorCallback | None = None,
        gate: VersionGate | None = None,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
    ) -> None:
        if retry_initial <= 0 or retry_max < retry_initial:
            raise ValueError("need 0 < retry_initial <= retry_max")
        self.client = client
        """The centrifuge-python ``Client`` the subscription belongs to."""
        self.channel = channel
        """The channel of envelopes this helper follows."""
        self.gate = gate if gate is not None else VersionGate()
        """The ``VersionGate`` that decides every update (pass your own with ``gate=``)."""
        self._load = load
        self._on_update = on_update
        self._on_drop = on_drop
        self._on_resync = on_resync
        self._on_ready = on_ready
        self._on_error = on_error
        self._load_backoff = Backoff(initial=retry_initial, cap=retry_max)

        self._sub: Subscription | None = None
        self._events: _Events | None = None
        self._queue: asyncio.Queue[object] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._ready = False
        self._background: set[asyncio.Task[None]] = set()

    # -- public API ---------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once a sync finished, False while (re)loading or when not started."""
        return self._ready

    @property
    def buffered(self) -> int:
        """Items waiting for the worker: publications that arrive during a load wait here."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def subscription(self) -> Subscription | None:
        """The centrifuge-python ``Subscription`` while started."""
        return self._sub

    @property
    def events(self) -> _Events | None:
        """The event handler given to the SDK while started (for tests and tooling)."""
        return self._events

    async def start(self) -> None:
        """Subscribe, load, seed and replay; return once the first sync is done.

        A ``load()`` that fails is retried with jittered exponential backoff (and
        reported to ``on_error``), so bound the wait with ``asyncio.timeout`` if
        needed. If ``start`` fails or is cancelled, the helper is closed again and
        can be started anew. Raises ``SubscriptionLost`` when the server ends the
        subscription before the first sync.
        """
        if self._sub is not None:
            raise RuntimeError(f"{self.channel}: already started")
        events = _Events(self)
        sub = self.client.new_subscription(
            self.channel, events=events, recoverable=True, positioned=True
        )
        queue: asyncio.Queue[object] = asyncio.Queue()
        started = asyncio.get_running_loop().create_future()
        self._sub, self._events, self._queue, self._started = sub, events, queue, started
        self._worker = asyncio.create_task(
            self._run(queue), name=f"centrifugo-async sync {self.channel}"
        )
        try:
            await sub.subscribe()
            await started
        except BaseException:
            await self.close()
            raise

    def request_resync(self, reason: str = "manual") -> None:
        """Reload the whole state after the updates already queued (e.g. after the
        app failed to apply one)."""
        if self._queue is not None:
            self._enqueue(_SyncRequest(reason))

    async def close(self) -> None:
        """Unsubscribe, remove the subscription from the client, stop the worker.

        Idempotent, never raises (problems go to ``on_error`` with ``"close"``).
        May be called from a callback.
        """
        sub, events, queue, worker, started = (
            self._sub,
            self._events,
            self._queue,
            self._worker,
            self._started,
        )
        if sub is None:
            return
        self._sub = self._events = self._queue = self._worker = self._started = None
        self._ready = False
        if events is not None:
            events.detach()
        if started is not None and not started.done():
            started.set_exception(SubscriptionLost(0, "closed before the first sync"))
        try:
            await sub.unsubscribe()
        except Exception as exc:
            await self._report(exc, "close")
        try:
            self.client.remove_subscription(sub)
        except Exception as exc:
            await self._report(exc, "close")
        if worker is not None:
            if worker is asyncio.current_task():
                # Called from a callback: the worker ends after this item (and
                # skips whatever is still queued).
                if queue is not None:
                    queue.put_nowait(_STOP)
            else:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
        for task in list(self._background):
            task.cancel()

    # -- SDK side (called from _Events: quick, never raising) --------------------

    def _enqueue(self, item: object) -> None:
        if self._queue is not None:
            self._queue.put_nowait(item)

    def _lost(self, error: SubscriptionLost) -> None:
        started = self._started
        if started is not None and not started.done():
            started.set_exception(error)
        else:
            self._report_soon(error, "unsubscribed")

    def _report_soon(self, exc: BaseException, context: str) -> None:
        task = asyncio.get_running_loop().create_task(self._report(exc, context))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- worker --------------------------------------------------------------------

    async def _run(self, queue: asyncio.Queue[object]) -> None:
        while True:
            item = await queue.get()
            if item is _STOP or self._queue is not queue:  # closed
                return
            try:
                if isinstance(item, _SyncRequest):
                    await self._sync(item.reason, queue)
                else:
                    await self._deliver(item)
            except Exception as exc:  # a bug here must not stop the updates
                await self._report(exc, "worker")

    async def _sync(self, reason: str | None, queue: asyncio.Queue[object]) -> None:
        # ``self._queue is queue`` while this run is current: a callback may close
        # the helper (and even start it again) while the sync is in progress.
        self._ready = False
        if reason is not None:
            await self._call("on_resync", self._on_resync, reason)
            if self._queue is not queue:
                return
            self.gate.reset()
        if not await self._load_and_seed(queue):
            return
        self._ready = True
        started = self._started
        if started is not None and not started.done():
            started.set_result(None)
        await self._call("on_ready", self._on_ready)

    async def _load_and_seed(self, queue: asyncio.Queue[object]) -> bool:
        """Load the app's state and seed the gate, retrying with backoff until it works.

        False when the helper was closed (or restarted) meanwhile: the caller stops.
        """
        async for _ in self._load_backoff.attempts():
            try:
                pairs = _seed_pairs(await self._load())
                if self._queue is not queue:
                    return False
                for key, version in pairs:
                    self.gate.seed(key, version)
                return True
            except Exception as exc:
                await self._report(exc, "load")
            if self._queue is not queue:
                return False
        raise AssertionError("unreachable: attempts without a stop event never end")

    async def _deliver(self, data: object) -> None:
        try:
            envelope = envelope_from_data(data)
        except EnvelopeDecodeError as exc:
            await self._report(exc, "publication")
            return
        decision = self.gate.accept(envelope)
        if decision.accepted:
            await self._call("on_update", self._on_update, envelope, decision)
        else:
            await self._call("on_drop", self._on_drop, envelope, decision)

    async def _call(self, name: str, callback: Callable[..., object] | None, *args: object) -> None:
        if callback is None:
            return
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            await self._report(exc, name)

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

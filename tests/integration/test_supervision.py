"""Every long-lived task of the relay survives an unexpected exception (issue 10).

The lease keeper, the health sampler and the topology watcher each get one
injected ``RuntimeError`` (a bug nobody foresaw). Each is logged once with its
traceback and the task runs again: the leases outlive their TTL, ``/health``
turns green again, messages published after the crash are delivered, and a
stop still ends the relay. Without supervision the keeper's death lets every
lease expire, the sampler's leaves ``/health`` red for good, and the
watcher's keeps the workers running after a stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from centrifugo_async import Message, Publisher
from centrifugo_async.protocol import topology
from centrifugo_async.relay import RelaySettings, serve
from centrifugo_async.relay.health import Sampler
from centrifugo_async.relay.lease import LeaseKeeper
from devstack import CentrifugoServer, free_port
from tests.support.stack import history, wait_until

pytestmark = pytest.mark.integration

SHARDS = 4


@attrs.define
class Fault:
    """Wraps a function so that its ``fail_on``-th call raises; counts every call."""

    fail_on: int
    calls: int = 0
    fired: bool = False

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def faulty(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self.fail_on:
                self.fired = True
                raise RuntimeError("injected bug")
            return function(*args, **kwargs)

        return faulty


def health_status(port: int) -> tuple[int, list[str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, json.load(response)["problems"]
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)["problems"]
    except urllib.error.URLError:
        return 0, []


@pytest.mark.parametrize(
    ("task", "target", "name", "fail_on", "calls_after"),
    [
        # Four ticks after the crash (one every third of the TTL) outlast the TTL.
        ("lease keeper", LeaseKeeper, "tick", 2, 4),
        # Stale after three intervals without a sample: /health must come back.
        ("health sampler", Sampler, "sample", 2, 4),
        # The watcher's first poll: a stop must still end the relay afterwards.
        ("topology watcher", topology, "watch_shards", 1, 1),
    ],
)
async def test_a_task_that_crashes_is_restarted_and_the_relay_keeps_delivering(
    relay_settings: RelaySettings,
    centrifugo: CentrifugoServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    task: str,
    target: object,
    name: str,
    fail_on: int,
    calls_after: int,
) -> None:
    caplog.set_level(logging.INFO, "centrifugo_async.relay")
    fault = Fault(fail_on)
    monkeypatch.setattr(target, name, fault.wrap(getattr(target, name)))
    port = free_port()
    settings = attrs.evolve(relay_settings, shards=SHARDS, metrics_port=port)
    stop = asyncio.Event()
    relay = asyncio.create_task(serve(settings, stop=stop))
    channel = f"obj:supervised-{name}"
    try:
        await wait_until(lambda: fault.fired, 20)
        await wait_until(lambda: fault.calls >= fail_on + calls_after, 20)
        await wait_until(lambda: health_status(port)[0] == 200, 20, every=0.2)

        with Publisher.from_url(settings.redis_url, shards=SHARDS) as publisher:
            publisher.publish_many([Message(channel, {}, f"key-{i}", 1) for i in range(20)])
        await wait_until(lambda: len(history(centrifugo, channel)) == 20, 20, every=0.2)
    finally:
        stop.set()
        await asyncio.wait_for(relay, 20)

    crashes = [r for r in caplog.records if r.getMessage() == f"{task} crashed, restarting"]
    assert len(crashes) == 1
    assert crashes[0].exc_info is not None, "the traceback is logged"
    assert "RuntimeError: injected bug" in crashes[0].error  # type: ignore[attr-defined]

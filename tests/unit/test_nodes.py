"""Several Centrifugo nodes behind one relay: which node a shard's request goes to.

Shard ``N`` prefers node ``N % n``; a node failing a request (transport error,
HTTP 5xx) is passed over by every shard for the cooldown and then tried again;
each request goes to exactly one node. The setting accepts a TOML list, a
repeated flag or comma-separated text, and refuses an empty list, an empty
item, a URL without a host and a URL named twice, with one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs
import click
import pytest
from click.testing import CliRunner

from centrifugo_async import CentrifugoAuthError
from centrifugo_async.cli import config_check, relay
from centrifugo_async.relay.api import Verdict
from centrifugo_async.relay.config import describe, load_settings
from centrifugo_async.relay.metrics import RelayMetrics
from centrifugo_async.relay.nodes import NodeSet
from centrifugo_async.relay.settings import SETTINGS
from centrifugo_async.relay.transport import Response, TransportCause, TransportError

CLEAN_ENV: dict[str, str | None] = {s.env: None for s in SETTINGS} | {
    "CENTRIFUGO_ASYNC_CONFIG": None
}
KEY_ENV = {**CLEAN_ENV, "CENTRIFUGO_API_KEY": "k"}
OK = Response(200, b'{"replies":[]}')


@attrs.define
class ScriptedNode:
    """A transport answering from a script: a ``Response`` or a ``TransportError`` to raise."""

    name: str
    log: list[str]
    answer: Response | TransportError = OK
    closed: bool = False

    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> Response:
        self.log.append(self.name)
        if isinstance(self.answer, TransportError):
            raise self.answer
        return self.answer

    async def aclose(self) -> None:
        self.closed = True


@attrs.define
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def node_set(count: int, clock: Clock | None = None, cooldown: float = 5.0) -> NodeSet:
    log: list[str] = []
    transports = [ScriptedNode(f"n{i}", log) for i in range(count)]
    return NodeSet([(t.name, t) for t in transports], cooldown=cooldown, clock=clock or Clock())


def scripted(nodes: NodeSet, index: int) -> ScriptedNode:
    transport = nodes.nodes[index].transport
    assert isinstance(transport, ScriptedNode)
    return transport


def sent_to(nodes: NodeSet) -> list[str]:
    return scripted(nodes, 0).log


def test_shards_spread_over_the_nodes_in_turn() -> None:
    nodes = node_set(3)
    assert [nodes.pick(shard) for shard in range(7)] == [0, 1, 2, 0, 1, 2, 0]


async def test_each_request_goes_to_exactly_one_node() -> None:
    nodes = node_set(2)
    for shard in range(4):
        result = await nodes.api_for(shard).send_batch([b"{}"] * 0)
        assert result.verdict is Verdict.REPLIES
    assert sent_to(nodes) == ["n0", "n1", "n0", "n1"]


@pytest.mark.parametrize(
    "failure",
    [
        TransportError(TransportCause.NETWORK, "connection refused", sent=False),
        TransportError(TransportCause.TIMEOUT, "timed out"),
        Response(503, b"unavailable"),
        Response(500, b"internal"),
    ],
    ids=["refused", "timeout", "503", "500"],
)
async def test_a_failing_node_is_passed_over_until_its_cooldown_ends(
    failure: Response | TransportError,
) -> None:
    clock = Clock()
    nodes = node_set(2, clock)
    api = nodes.api_for(0)
    scripted(nodes, 0).answer = failure
    first = await api.send_batch([])
    assert first.verdict is Verdict.RETRY
    scripted(nodes, 0).answer = OK
    retried = await api.send_batch([])
    assert retried.verdict is Verdict.REPLIES
    assert await nodes.api_for(2).send_batch([]) == retried  # every shard passes over n0
    clock.now += 4.9
    await api.send_batch([])
    clock.now += 0.1
    await api.send_batch([])  # the cooldown is over: back to the preferred node
    assert sent_to(nodes) == ["n0", "n1", "n1", "n1", "n0"]


@pytest.mark.parametrize("status", [400, 413, 429, 200])
async def test_answers_that_are_not_the_nodes_fault_keep_the_shard_where_it_is(
    status: int,
) -> None:
    nodes = node_set(2)
    scripted(nodes, 0).answer = Response(status, b"{}")
    await nodes.api_for(0).send_batch([])
    await nodes.api_for(0).send_batch([])
    assert sent_to(nodes) == ["n0", "n0"]


async def test_when_every_node_fails_the_oldest_failure_is_tried_first() -> None:
    clock = Clock()
    nodes = node_set(3, clock)
    down = TransportError(TransportCause.NETWORK, "refused", sent=False)
    for index in range(3):
        scripted(nodes, index).answer = down
    api = nodes.api_for(1)
    for _ in range(4):
        await api.send_batch([])
        clock.now += 1
    assert sent_to(nodes) == ["n1", "n2", "n0", "n1"]


async def test_failures_and_successes_are_counted_per_node() -> None:
    metrics = RelayMetrics()
    log: list[str] = []
    good, bad = ScriptedNode("good", log), ScriptedNode("bad", log, Response(502, b""))
    nodes = NodeSet([("http://a/api", bad), ("http://b/api", good)], metrics=metrics)
    await nodes.api_for(0).send_batch([])
    await nodes.api_for(0).send_batch([])

    def count(node: str, outcome: str) -> float | None:
        labels = {"node": node, "outcome": outcome}
        return metrics.registry.get_sample_value("centrifugo_async_node_requests_total", labels)

    assert count("http://a/api", "failed") == 1
    assert count("http://b/api", "ok") == 1


async def test_start_up_check_needs_one_answering_node_and_names_every_silent_one() -> None:
    nodes = node_set(2)
    scripted(nodes, 0).answer = TransportError(TransportCause.NETWORK, "refused A", sent=False)
    assert (await nodes.check()).verdict is Verdict.REPLIES
    assert nodes.pick(0) == 1  # the silent node is passed over from the start
    scripted(nodes, 1).answer = Response(503, b"down B")
    none = await nodes.check()
    assert none.verdict is Verdict.RETRY
    assert "n0: refused A" in none.reason and "n1: HTTP 503: down B" in none.reason


async def test_a_node_refusing_the_key_is_fatal() -> None:
    nodes = node_set(2)
    scripted(nodes, 1).answer = Response(401, b"")
    with pytest.raises(CentrifugoAuthError):
        await nodes.check()


async def test_closing_the_set_closes_every_node_but_a_shard_route_closes_none() -> None:
    nodes = node_set(2)
    await nodes.api_for(0).aclose()
    assert not scripted(nodes, 0).closed
    await nodes.aclose()
    assert scripted(nodes, 0).closed and scripted(nodes, 1).closed


def test_an_empty_node_set_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        NodeSet([])


A, B = "http://10.0.0.1:8000/api", "http://10.0.0.2:8000/api"


def test_one_url_reads_as_it_always_did() -> None:
    settings, _ = load_settings(None, {"CENTRIFUGO_API_KEY": "k"}, {"api_url": A})
    assert settings.api_url == A and settings.api_urls == (A,)


def test_the_urls_come_from_a_toml_list_the_environment_or_a_repeated_flag(
    tmp_path: Path,
) -> None:
    toml = tmp_path / "relay.toml"
    toml.write_text(f'[centrifugo]\napi_url = ["{A}", "{B}"]\napi_key = "k"\n')
    from_file, _ = load_settings(toml, {})
    from_env, _ = load_settings(
        None, {"CENTRIFUGO_API_KEY": "k", "CENTRIFUGO_API_URL": f"{A}, {B}"}
    )
    assert from_file.api_urls == from_env.api_urls == (A, B)
    result = CliRunner().invoke(config_check, ["--api-url", A, "--api-url", B], env=KEY_ENV)
    assert result.exit_code == 0, result.output
    assert f'api_url = "{A},{B}"  # --api-url' in result.output


def test_every_url_is_masked() -> None:
    urls = "http://u:pw-one@10.0.0.1/api,http://u:pw-two@10.0.0.2/api"
    settings, origin = load_settings(None, {"CENTRIFUGO_API_KEY": "k"}, {"api_url": urls})
    shown = describe(settings, origin) + repr(settings)
    assert "pw-one" not in shown and "pw-two" not in shown
    assert "http://u:***@10.0.0.2/api" in shown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--api-url", f"{A},{A}"], f"api_url names '{A}' twice"),
        (["--api-url", A, "--api-url", f"{A}/"], f"api_url names '{A}/' twice"),
        (["--api-url", f"{A},,{B}"], "api_url has an empty URL (item 2 of 3)"),
        (["--api-url", f"{A},http:///api"], "api_url item 2: must name a host"),
        (["--api-url", f"{A},ftp://h/api"], "api_url item 2: must start with one of"),
        (["--api-url", " "], "api_url must name at least one URL"),
    ],
)
@pytest.mark.parametrize("command", [config_check, relay], ids=["config check", "relay"])
def test_bad_url_lists_are_refused_with_one_line(
    command: click.Command, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(command, args, env=KEY_ENV)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert message in lines[0]


def test_an_empty_toml_list_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "relay.toml"
    toml.write_text('[centrifugo]\napi_url = []\napi_key = "k"\n')
    result = CliRunner().invoke(config_check, ["--config", str(toml)], env=CLEAN_ENV)
    assert result.exit_code == 1
    assert "api_url must name at least one URL, got '' (from centrifugo.api_url in" in (
        result.output
    )

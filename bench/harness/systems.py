"""The systems compared: each one way of moving messages from a producer into Centrifugo."""

from __future__ import annotations

import attrs

__all__ = ["System", "all_systems"]


@attrs.frozen
class System:
    """One way of getting messages into Centrifugo.

    ``kind`` says which mover runs between Redis and Centrifugo: ``naive`` (a
    worker popping a list), ``stream`` (Centrifugo's built-in redis_stream
    consumer), ``ceiling`` (the producer posts to /api/batch itself) or
    ``relay`` (``centrifugo-async relay``). The other fields size it.
    """

    name: str
    label: str
    kind: str  # "naive" | "stream" | "ceiling" | "relay"
    ordered: bool
    in_flight: int = 1
    workers: int = 1
    streams: int = 1
    shards: int = 16
    processes: int = 1
    lanes: int = 16

    @property
    def mover(self) -> str:
        """What the CPU and RSS columns measure for this system."""
        return {
            "naive": "worker",
            "relay": "relay",
            "stream": "(inside Centrifugo)",
            "ceiling": "(poster)",
        }[self.kind]


def all_systems(stream_workers: int = 16, ceiling_lanes: int = 16) -> list[System]:
    systems = [
        System("naive-ordered", "naive worker, 1 in flight", "naive", True),
        System("naive-parallel", "naive worker, 20 in flight", "naive", False, in_flight=20),
        System("stream-ordered", "redis_stream, num_workers 1", "stream", True),
        System(
            "stream-parallel",
            f"redis_stream, num_workers {stream_workers}",
            "stream",
            False,
            workers=stream_workers,
        ),
        System(
            "stream-sharded",
            "redis_stream, 16 streams x 1 worker",
            "stream",
            True,
            streams=16,
        ),
        System(
            "ceiling",
            f"ceiling: /api/batch, {ceiling_lanes} lanes",
            "ceiling",
            True,
            lanes=ceiling_lanes,
        ),
    ]
    for shards in (1, 4, 16):
        for processes in (1, 2):
            systems.append(
                System(
                    f"relay-{shards}x{processes}",
                    f"relay, {shards} shard{'s' if shards > 1 else ''}, "
                    f"{processes} process{'es' if processes > 1 else ''}",
                    "relay",
                    True,
                    shards=shards,
                    processes=processes,
                )
            )
    return systems

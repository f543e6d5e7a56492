"""The forwarder's settings never show a password in their ``repr`` (logs, tracebacks)."""

from __future__ import annotations

import pytest

from centrifugo_async.outbox.settings import ForwarderSettings


@pytest.mark.parametrize(
    "dsn",
    [
        "host=db user=app password=s3cret dbname=app",
        "host=db password='s3cret with spaces' dbname=app",
        "postgresql://app:s3cret@db/app",
        "postgresql://app@db/app?password=s3cret",
    ],
)
def test_dsn_password_is_masked(dsn: str) -> None:
    shown = repr(ForwarderSettings(dsn=dsn, redis_url="redis://:s3cret@127.0.0.1:6379/0"))
    assert "s3cret" not in shown
    assert "***" in shown
    assert "dsn=" in shown and "redis_url=" in shown

"""The one retry policy for things the agent must wait for rather than give up on.

Docker away, Consul away while a lost store is rebuilt, a state volume that cannot be
written yet: each is waited out with exponential backoff and one log event per retry,
never a crash. A stop interrupts the wait at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential
from tenacity.retry import retry_base


def retry_forever(
    event: str,
    *,
    log: structlog.typing.FilteringBoundLogger,
    first_wait: float = 0.2,
    max_wait: float = 5.0,
    retry: retry_base | None = None,
    stopping: asyncio.Event | None = None,
    error_level: bool = False,
    on_retry: Callable[[], None] | None = None,
    **fields: Any,
) -> AsyncRetrying:
    """Retry until it works (or `stopping` is set: then the last error is raised).

    Each retry logs `event` with the attempt, the error and the wait, plus `fields`.
    """

    def note(rs: RetryCallState) -> None:
        if on_retry is not None:
            on_retry()
        (log.error if error_level else log.warning)(
            event,
            attempt=rs.attempt_number,
            error=str(rs.outcome.exception()) if rs.outcome else None,
            retry_in_s=rs.next_action.sleep if rs.next_action else None,
            **fields,
        )

    async def sleep(seconds: float) -> None:
        if stopping is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)

    return AsyncRetrying(
        wait=wait_exponential(multiplier=first_wait, max=max_wait),
        retry=retry or retry_if_exception_type(Exception),
        stop=(lambda _: stopping.is_set()) if stopping is not None else (lambda _: False),
        sleep=sleep,
        before_sleep=note,
        reraise=True,
    )

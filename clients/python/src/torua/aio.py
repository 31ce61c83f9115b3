"""`AsyncClient`: the asyncio torua client on `httpx.AsyncClient`.

The same constructor, endpoints, failover and retries as `Client` (they live in `_client`, `_api`
and `_exchange`), driven with awaited I/O; every endpoint method returns an awaitable.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import httpx

from ._client import ClientBase
from ._exchange import Op, Sleep, Step

T = TypeVar("T")


class AsyncClient(ClientBase):
    """The asyncio torua client; takes the same arguments as `torua.Client`.

    Use it as an async context manager, or `await client.aclose()`.
    """

    _http_class = httpx.AsyncClient

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _drive(self, op: Op[T]) -> T:
        """Runs an endpoint generator to its end with awaited I/O."""
        try:
            step = next(op)
            while True:
                step = op.send(await self._perform(step))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _perform(self, step: Step) -> Any:
        """What to send back into the generator for one step."""
        if isinstance(step, Sleep):
            return await asyncio.sleep(step.seconds)
        try:
            return await self._http.request(**vars(step))
        except httpx.TransportError as e:
            return e

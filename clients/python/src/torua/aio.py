"""`AsyncClient`: the asyncio torua client on `httpx.AsyncClient`.

The same endpoints, failover and retries as `Client` (they live in `_api` and `_exchange`), driven
with awaited I/O; every endpoint method is a coroutine.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from typing import Any, Awaitable, Callable, Dict, Optional, TypeVar, Union

import httpx

from . import _connect
from ._api import Api
from ._exchange import Nodes, Op, Send, Settings, Sleep

T = TypeVar("T")


def _async(op: Callable[..., Op[T]]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(op)
    async def method(self: "AsyncClient", *args: Any, **kwargs: Any) -> T:
        return await self._drive(op(self._api, *args, **kwargs))

    # The endpoint's answer type, not the generator's (`Op[Retrieval]` -> `Retrieval`).
    answer = str(op.__annotations__.get("return", "Any"))
    if answer.startswith("Op[") and answer.endswith("]"):
        method.__annotations__ = {**op.__annotations__, "return": answer[3:-1]}
    return method


class AsyncClient:
    """The asyncio torua client; takes the same arguments as `torua.Client`.

    Use it as an async context manager, or `await client.aclose()`.
    """

    def __init__(
        self,
        urls: _connect.Urls,
        *,
        api_key: Optional[str] = None,
        ca: Optional[str] = None,
        verify: Union[None, bool, ssl.SSLContext] = None,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        batch_size: int = 2000,
        headers: Optional[Dict[str, str]] = None,
    ) -> None:
        self.settings = Settings(
            urls=_connect.normalize_urls(urls, tls=bool(ca)),
            api_key=api_key,
            timeout=timeout,
            connect_timeout=connect_timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            batch_size=batch_size,
        )
        self._api = Api(self.settings, Nodes(self.settings.urls))
        self._http = httpx.AsyncClient(
            verify=_connect.verify(ca, verify),
            headers=_connect.headers(api_key, headers),
            timeout=timeout,
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> "AsyncClient":
        """An async client configured from `TORUA_URLS`/`TORUA_URL`, `TORUA_API_KEY` and
        `TORUA_CA`; keyword arguments override them."""
        return cls(**{**_connect.from_env(), **kwargs})

    @property
    def urls(self) -> list:
        return list(self.settings.urls)

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
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = op.send(None)
                    continue
                assert isinstance(step, Send)
                try:
                    result: Any = await self._http.request(
                        step.method,
                        step.url,
                        params=step.params,
                        json=step.json,
                        timeout=step.timeout,
                    )
                except httpx.TransportError as e:
                    result = e
                step = op.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    health = _async(Api.health)
    cluster_health = _async(Api.cluster_health)
    cluster_nodes = _async(Api.cluster_nodes)
    nodes = _async(Api.nodes)
    shards = _async(Api.shards)
    drain = _async(Api.drain)
    undrain = _async(Api.undrain)
    metrics = _async(Api.metrics)
    openapi = _async(Api.openapi)
    broadcast = _async(Api.broadcast)
    wait_applied = _async(Api.wait_applied)
    ingest = _async(Api.ingest)
    get_entity = _async(Api.get_entity)
    get_chunk = _async(Api.get_chunk)
    get_document = _async(Api.get_document)
    delete_entity = _async(Api.delete_entity)
    delete_document = _async(Api.delete_document)
    query = _async(Api.query)
    neighborhood = _async(Api.neighborhood)
    path = _async(Api.path)
    retrieve = _async(Api.retrieve)
    create_key = _async(Api.create_key)
    list_keys = _async(Api.list_keys)
    revoke_key = _async(Api.revoke_key)

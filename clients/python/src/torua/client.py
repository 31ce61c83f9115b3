"""`Client`: the synchronous torua client on `httpx.Client`.

It owns the connection pool and drives the endpoint generators of `_api.Api` with blocking I/O;
the endpoints, failover and retries are defined there and in `_exchange`, shared with `AsyncClient`.
"""

from __future__ import annotations

import functools
import ssl
import time
from typing import Any, Callable, Dict, Optional, TypeVar, Union

import httpx

from . import _connect
from ._api import Api
from ._exchange import Nodes, Op, Send, Settings, Sleep

T = TypeVar("T")


def _sync(op: Callable[..., Op[T]]) -> Callable[..., T]:
    @functools.wraps(op)
    def method(self: "Client", *args: Any, **kwargs: Any) -> T:
        return self._drive(op(self._api, *args, **kwargs))

    # The endpoint's answer type, not the generator's (`Op[Retrieval]` -> `Retrieval`).
    answer = str(op.__annotations__.get("return", "Any"))
    if answer.startswith("Op[") and answer.endswith("]"):
        method.__annotations__ = {**op.__annotations__, "return": answer[3:-1]}
    return method


class Client:
    """A torua client.

    `urls`: one node URL or several (a list or a comma-separated string); requests go to the node
    that answered last and fail over to the next on connection errors, timeouts and 503.
    `api_key`: sent as `Authorization: Bearer`. `ca`: a PEM file to trust for HTTPS (the cluster's
    CA, `torua cert --secret-ca`); `verify` overrides it (an `ssl.SSLContext` or False).
    `timeout`: seconds per request (longer for requests that carry a `timeout_ms`);
    `connect_timeout`: seconds to connect. `retries`: rounds over the nodes for 429/503 and
    unreachable clusters, with exponential backoff from `backoff` seconds (or the server's
    `Retry-After`), each pause at most `max_backoff`. `batch_size`: items per ingest request.

    Use it as a context manager, or call `close()`.
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
        self._http = httpx.Client(
            verify=_connect.verify(ca, verify),
            headers=_connect.headers(api_key, headers),
            timeout=timeout,
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> "Client":
        """A client configured from `TORUA_URLS`/`TORUA_URL`, `TORUA_API_KEY` and `TORUA_CA`;
        keyword arguments override them."""
        return cls(**{**_connect.from_env(), **kwargs})

    @property
    def urls(self) -> list:
        return list(self.settings.urls)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _drive(self, op: Op[T]) -> T:
        """Runs an endpoint generator to its end with blocking I/O."""
        try:
            step = next(op)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = op.send(None)
                    continue
                assert isinstance(step, Send)
                try:
                    result: Any = self._http.request(
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

    health = _sync(Api.health)
    cluster_health = _sync(Api.cluster_health)
    cluster_nodes = _sync(Api.cluster_nodes)
    nodes = _sync(Api.nodes)
    shards = _sync(Api.shards)
    drain = _sync(Api.drain)
    undrain = _sync(Api.undrain)
    metrics = _sync(Api.metrics)
    openapi = _sync(Api.openapi)
    broadcast = _sync(Api.broadcast)
    wait_applied = _sync(Api.wait_applied)
    ingest = _sync(Api.ingest)
    get_entity = _sync(Api.get_entity)
    get_chunk = _sync(Api.get_chunk)
    get_document = _sync(Api.get_document)
    delete_entity = _sync(Api.delete_entity)
    delete_document = _sync(Api.delete_document)
    query = _sync(Api.query)
    neighborhood = _sync(Api.neighborhood)
    path = _sync(Api.path)
    retrieve = _sync(Api.retrieve)
    create_key = _sync(Api.create_key)
    list_keys = _sync(Api.list_keys)
    revoke_key = _sync(Api.revoke_key)

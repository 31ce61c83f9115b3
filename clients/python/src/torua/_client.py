"""What `Client` and `AsyncClient` share: the constructor (settings, the node list and the httpx
client), `from_env`, and every endpoint method, bound once to `Api`'s generators.

A subclass names its httpx client class (`_http_class`) and drives an endpoint generator to its
end in `_drive`: with blocking I/O it returns the answer, with awaited I/O (an `async def`) every
endpoint method returns an awaitable of it.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any, Callable, ClassVar, Dict, Optional, Type, TypeVar, Union

from . import _connect
from ._api import Api
from ._exchange import Nodes, Op, Settings

T = TypeVar("T")
C = TypeVar("C", bound="ClientBase")


def _endpoint(op: Callable[..., Op[T]]) -> Callable[..., T]:
    @functools.wraps(op)
    def method(self: "ClientBase", *args: Any, **kwargs: Any) -> Any:
        return self._drive(op(self._api, *args, **kwargs))

    # The endpoint's answer type, not the generator's (`Op[Retrieval]` -> `Retrieval`).
    answer = str(op.__annotations__.get("return", "Any"))
    if answer.startswith("Op[") and answer.endswith("]"):
        method.__annotations__ = {**op.__annotations__, "return": answer[3:-1]}
    return method


class ClientBase:
    """The arguments of both clients (documented on `torua.Client`) and their endpoints."""

    _http_class: ClassVar[Type[Any]]

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
        self._http = self._http_class(
            verify=_connect.verify(ca, verify),
            headers=_connect.headers(api_key, headers),
            timeout=timeout,
        )

    @classmethod
    def from_env(cls: Type[C], **kwargs: Any) -> C:
        """A client configured from `TORUA_URLS`/`TORUA_URL`, `TORUA_API_KEY` and `TORUA_CA`;
        keyword arguments override them."""
        return cls(**{**_connect.from_env(), **kwargs})

    @property
    def urls(self) -> list:
        return list(self.settings.urls)

    def _drive(self, op: Op[Any]) -> Any:
        raise NotImplementedError

    health = _endpoint(Api.health)
    cluster_health = _endpoint(Api.cluster_health)
    cluster_nodes = _endpoint(Api.cluster_nodes)
    nodes = _endpoint(Api.nodes)
    shards = _endpoint(Api.shards)
    drain = _endpoint(Api.drain)
    undrain = _endpoint(Api.undrain)
    rebuild_copy = _endpoint(Api.rebuild_copy)
    metrics = _endpoint(Api.metrics)
    openapi = _endpoint(Api.openapi)
    broadcast = _endpoint(Api.broadcast)
    wait_applied = _endpoint(Api.wait_applied)
    ingest = _endpoint(Api.ingest)
    get_entity = _endpoint(Api.get_entity)
    get_chunk = _endpoint(Api.get_chunk)
    get_document = _endpoint(Api.get_document)
    delete_entity = _endpoint(Api.delete_entity)
    delete_document = _endpoint(Api.delete_document)
    query = _endpoint(Api.query)
    neighborhood = _endpoint(Api.neighborhood)
    path = _endpoint(Api.path)
    retrieve = _endpoint(Api.retrieve)
    run_algorithm = _endpoint(Api.run_algorithm)
    pagerank = _endpoint(Api.pagerank)
    wcc = _endpoint(Api.wcc)
    degree = _endpoint(Api.degree)
    louvain = _endpoint(Api.louvain)
    task = _endpoint(Api.task)
    tasks = _endpoint(Api.tasks)
    cancel_task = _endpoint(Api.cancel_task)
    wait_task = _endpoint(Api.wait_task)
    create_key = _endpoint(Api.create_key)
    list_keys = _endpoint(Api.list_keys)
    revoke_key = _endpoint(Api.revoke_key)

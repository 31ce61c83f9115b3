"""`Client`: the synchronous torua client on `httpx.Client`.

It owns the connection pool and drives the endpoint generators of `_api.Api` with blocking I/O.
The constructor and the endpoint methods are `_client.ClientBase`'s, the endpoints, failover and
retries `_api`'s and `_exchange`'s: all shared with `AsyncClient`.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

import httpx

from ._client import ClientBase
from ._exchange import Op, Sleep, Step

T = TypeVar("T")


class Client(ClientBase):
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

    _http_class = httpx.Client

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
                step = op.send(self._perform(step))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _perform(self, step: Step) -> Any:
        """What to send back into the generator for one step."""
        if isinstance(step, Sleep):
            return time.sleep(step.seconds)
        try:
            return self._http.request(**vars(step))
        except httpx.TransportError as e:
            return e

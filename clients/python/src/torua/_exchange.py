"""How one API call reaches the cluster, without doing any I/O: failover across nodes, retries with
backoff, and turning answers into values or exceptions.

Everything here is a generator that *yields* what it wants done — `Send` (an HTTP request) or
`Sleep` (a pause) — and is sent back the `httpx.Response` or the transport exception. The sync
`Client` and the async `AsyncClient` each drive the same generators with their own I/O, so the
policy exists once.

Policy:
- nodes are tried in turn starting with the one that answered last; a connection error, a timeout
  or a 503 moves on to the next node (a timeout only for calls safe to repeat);
- when every node failed, or a node answered 429/503, the call is tried again after
  `Retry-After` (capped) or an exponential backoff, up to `retries` times;
- any other answer ends the call: 2xx is parsed, the rest raise the `ToruaError` for its status.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generator, List, Optional, TypeVar, Union

import httpx

from .errors import ConnectionFailed, ToruaError, error_for

T = TypeVar("T")


@dataclass
class Settings:
    """A client's configuration, shared by the sync and async clients: the arguments of
    `ClientBase`, whose signature holds their defaults."""

    urls: List[str]
    api_key: Optional[str]
    timeout: float
    connect_timeout: float
    retries: int
    backoff: float
    max_backoff: float
    batch_size: int


@dataclass
class Call:
    """One API request and how to read its answer."""

    method: str
    path: str
    params: Optional[Dict[str, Any]] = None
    json: Any = None
    parse: Callable[[Any], Any] = lambda body: body
    # The answer is text (`/metrics`), not JSON.
    text: bool = False
    # Whether sending it twice is harmless, so that a timeout may be retried on another node.
    idempotent: bool = True
    # Seconds this request may take; None: the client's timeout.
    timeout: Optional[float] = None


@dataclass
class Send:
    """Step: send this request and send back the response (or the transport exception). The
    fields are `httpx`'s request arguments of the same names."""

    method: str
    url: str
    params: Optional[Dict[str, Any]]
    json: Any
    timeout: httpx.Timeout


@dataclass
class Sleep:
    """Step: pause this long (seconds), then send back None."""

    seconds: float


Step = Union[Send, Sleep]
Op = Generator[Step, Any, T]


@dataclass
class Nodes:
    """The cluster's node URLs and which one answered last (tried first next time)."""

    urls: List[str]
    preferred: int = 0
    # The last transport error per URL, for the message when none answers.
    last_errors: Dict[str, str] = field(default_factory=dict)

    def order(self) -> List[int]:
        n = len(self.urls)
        return [(self.preferred + k) % n for k in range(n)]


# Errors before the request reached the server: always safe to try the next node.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def backoff(settings: Settings, attempt: int, retry_after: Optional[float]) -> float:
    """Seconds to wait before try `attempt + 1`: the server's Retry-After when it gave one, else
    exponential from `settings.backoff` with a little jitter; never over `max_backoff`."""
    if retry_after is not None:
        return max(0.0, min(retry_after, settings.max_backoff))
    delay = settings.backoff * (2**attempt)
    delay += random.uniform(0, delay / 4)
    return min(delay, settings.max_backoff)


def retry_after(response: httpx.Response) -> Optional[float]:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def decode(response: httpx.Response, text: bool = False) -> Any:
    if text:
        return response.text
    try:
        return response.json()
    except ValueError:
        return response.text


def exchange(settings: Settings, nodes: Nodes, call: Call) -> Op[Any]:
    """Runs `call` against the cluster (see the module's policy) and returns its parsed answer."""
    seconds = call.timeout if call.timeout is not None else settings.timeout
    timeout = httpx.Timeout(seconds, connect=min(settings.connect_timeout, seconds))
    last: Optional[ToruaError] = None
    for attempt in range(settings.retries + 1):
        wait_hint: Optional[float] = None
        answer: Optional[httpx.Response] = None
        answer_url = call.path
        for i in nodes.order():
            url = nodes.urls[i] + call.path
            result = yield Send(call.method, url, call.params, call.json, timeout)
            if isinstance(result, BaseException):
                if not isinstance(result, httpx.TransportError):
                    raise result
                nodes.last_errors[nodes.urls[i]] = f"{type(result).__name__}: {result}"
                last = ConnectionFailed(
                    f"{type(result).__name__}: {result}", method=call.method, url=url
                )
                if isinstance(result, _NOT_SENT) or call.idempotent:
                    continue
                raise last from result
            response: httpx.Response = result
            if response.status_code == 503 and i != nodes.order()[-1]:
                last = error_for(503, decode(response), call.method, url)
                wait_hint = retry_after(response)
                continue
            if response.status_code != 503:
                nodes.preferred = i
            answer, answer_url = response, url
            break
        if answer is None:
            # Every node failed: try the round again after a pause.
            if attempt < settings.retries:
                yield Sleep(backoff(settings, attempt, wait_hint))
                continue
            break
        status = answer.status_code
        if 200 <= status < 300:
            return call.parse(decode(answer, call.text))
        body = decode(answer)
        err = error_for(status, body, call.method, answer_url)
        if status in (429, 503) and attempt < settings.retries:
            last = err
            yield Sleep(backoff(settings, attempt, retry_after(answer)))
            continue
        raise err
    if last is None:
        last = ConnectionFailed("no node answered", method=call.method, url=call.path)
    if isinstance(last, ConnectionFailed):
        tried = "; ".join(f"{u}: {e}" for u, e in nodes.last_errors.items())
        last = ConnectionFailed(
            f"no node answered after {settings.retries + 1} rounds ({tried})",
            method=call.method,
            url=call.path,
        )
    raise last

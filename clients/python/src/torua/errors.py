"""The exceptions a torua call raises.

Every answer the server refuses becomes a `ToruaError` subclass chosen by HTTP status, carrying
the status, the server's `reason` (from its `{"error": {"status", "reason"}}` body) and the whole
body, so callers branch on the type and show the reason. `ConnectionFailed` means no node
answered at all.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Type

__all__ = [
    "ToruaError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "Unprocessable",
    "Overloaded",
    "ServerError",
    "Unavailable",
    "RequestTimeout",
    "ConnectionFailed",
    "IngestFailed",
    "error_for",
]


class ToruaError(Exception):
    """A request torua refused or could not answer.

    `status` is the HTTP status (None when no node answered), `reason` the server's explanation,
    `body` the decoded JSON answer (or its text), `method` and `url` the request that failed.
    """

    def __init__(
        self,
        reason: str,
        status: Optional[int] = None,
        body: Any = None,
        method: str = "",
        url: str = "",
    ) -> None:
        self.reason = reason
        self.status = status
        self.body = body
        self.method = method
        self.url = url
        where = f"{method} {url}: " if method else ""
        code = f"{status} " if status is not None else ""
        super().__init__(f"{where}{code}{reason}")


class BadRequest(ToruaError):
    """400: the request is invalid. For ingest, `items` lists each refused item (kind, index, id,
    reason) and nothing was written."""

    @property
    def items(self) -> List[Dict[str, Any]]:
        if isinstance(self.body, dict):
            return list(self.body.get("items") or [])
        return []


class Unauthorized(ToruaError):
    """401: no API key, or an unknown or revoked one."""


class Forbidden(ToruaError):
    """403: the key's role does not allow this route."""


class NotFound(ToruaError):
    """404: the entity, chunk, document, node or key does not exist (or the route is unknown)."""


class PayloadTooLarge(ToruaError):
    """413: the body is over the server's limit (1 MiB, 64 MiB for ingest)."""


class Unprocessable(ToruaError):
    """422: the traversal would collect more than the server allows."""


class Overloaded(ToruaError):
    """429: too many requests of this kind in flight on the node; retried before it is raised."""


class ServerError(ToruaError):
    """500 or another unexpected status."""


class Unavailable(ToruaError):
    """503: no quorum, no shard map, shards without an answering copy or too busy to apply; retried
    on the other nodes before it is raised."""


class RequestTimeout(ToruaError):
    """408 or 504: the request ran out of time on the server."""


class ConnectionFailed(ToruaError):
    """No node could be reached (refused, reset, timed out) within the retries."""


class IngestFailed(ToruaError):
    """The cluster acknowledged a batch only in part, and retrying did not write the rest; `items`
    lists the items not written, with why."""

    @property
    def items(self) -> List[Dict[str, Any]]:
        if isinstance(self.body, dict):
            return list(self.body.get("items") or [])
        return []


_BY_STATUS: Dict[int, Type[ToruaError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: NotFound,
    408: RequestTimeout,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: Overloaded,
    503: Unavailable,
    504: RequestTimeout,
}


def error_for(status: int, body: Any, method: str = "", url: str = "") -> ToruaError:
    """The exception for an answer with `status` and decoded `body`."""
    reason = ""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            reason = str(err.get("reason") or "")
        elif isinstance(err, str):
            reason = err
    elif isinstance(body, str):
        reason = body.strip()[:2000]
    if not reason:
        reason = f"HTTP {status}"
    cls = _BY_STATUS.get(status, ServerError)
    return cls(reason, status=status, body=body, method=method, url=url)

"""torua: the Python client of the torua distributed GraphRAG store.

- `Client` (client.py) and `AsyncClient` (aio.py): every HTTP endpoint, failover across node URLs,
  retries on 429/503, API key and TLS CA. Both drive the same endpoint definitions (`_api.py`)
  and failover/retry policy (`_exchange.py`).
- `types`: the answers and ingest items as dataclasses (each answer keeps its JSON in `raw`);
  graph algorithms (`pagerank`, `wcc`, `degree`) answer with a `Task` to poll or wait for.
- `errors`: `ToruaError` and one subclass per kind of refusal, with the server's reason.
- `graphrag`: `import_graphrag(client, folder)`, loading a Microsoft GraphRAG output folder as
  `torua import graphrag` does (extra `[graphrag]`).
- `langchain.ToruaRetriever` and `llama_index.ToruaRetriever`: framework retrievers over
  `POST /retrieve` (extras `[langchain]`, `[llama-index]`).
"""

from .aio import AsyncClient
from .client import Client
from .errors import (
    BadRequest,
    ConnectionFailed,
    Forbidden,
    IngestFailed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ServerError,
    ToruaError,
    Unauthorized,
    Unavailable,
    Unprocessable,
)
from .types import (
    Batch,
    Chunk,
    Community,
    Component,
    Document,
    Entity,
    Relation,
    Scored,
    Task,
    TaskProgress,
    TaskResult,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "Batch",
    "Chunk",
    "Community",
    "Document",
    "Entity",
    "Relation",
    # Graph algorithm tasks.
    "Task",
    "TaskProgress",
    "TaskResult",
    "Scored",
    "Component",
    # The exception classes: everything `errors` exports but its `error_for` helper (a test
    # keeps the two lists equal).
    "BadRequest",
    "ConnectionFailed",
    "Forbidden",
    "IngestFailed",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "RequestTimeout",
    "ServerError",
    "ToruaError",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
]

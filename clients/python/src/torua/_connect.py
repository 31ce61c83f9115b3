"""What both clients need to connect: node URLs, the API key header, the TLS trust, and the
`TORUA_*` environment variables the `torua` command line reads too."""

from __future__ import annotations

import os
import ssl
from typing import Dict, List, Optional, Sequence, Union

Urls = Union[str, Sequence[str]]


def normalize_urls(urls: Urls, tls: bool) -> List[str]:
    """`urls` as a list of base URLs without a trailing slash. A comma-separated string is split;
    a bare `host:port` gets `https://` when `tls`, else `http://`."""
    if isinstance(urls, str):
        urls = [u for u in urls.split(",")]
    out: List[str] = []
    for url in urls:
        url = url.strip().rstrip("/")
        if not url:
            continue
        if "://" not in url:
            url = ("https://" if tls else "http://") + url
        out.append(url)
    if not out:
        raise ValueError("give at least one node URL, e.g. http://127.0.0.1:7101")
    return out


def headers(api_key: Optional[str], extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    out = {"accept": "application/json", "user-agent": "torua-python/0.1.0"}
    if api_key:
        out["authorization"] = f"Bearer {api_key}"
    if extra:
        out.update(extra)
    return out


def verify(
    ca: Optional[str], verify: Union[None, bool, ssl.SSLContext]
) -> Union[bool, ssl.SSLContext]:
    """The TLS trust: an explicit `verify` wins; else the CA file `ca` (PEM, e.g. from
    `torua cert --secret-ca`); else the system's roots."""
    if verify is not None:
        return verify
    if ca:
        if not os.path.isfile(ca):
            raise FileNotFoundError(f"CA file {ca!r} does not exist")
        return ssl.create_default_context(cafile=ca)
    return True


def from_env() -> Dict[str, Optional[str]]:
    """`urls` from `TORUA_URLS` (comma-separated) or `TORUA_URL`, `api_key` from `TORUA_API_KEY`,
    `ca` from `TORUA_CA`."""
    urls = os.environ.get("TORUA_URLS") or os.environ.get("TORUA_URL")
    if not urls:
        raise ValueError("set TORUA_URLS (comma-separated node URLs) or TORUA_URL")
    return {
        "urls": urls,
        "api_key": os.environ.get("TORUA_API_KEY") or None,
        "ca": os.environ.get("TORUA_CA") or None,
    }

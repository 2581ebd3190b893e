"""Where drover lives: broker URL, namespace, controller URL and token from DROVER_* variables, and queue names."""
from __future__ import annotations

import os
import urllib.parse
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from . import controllers, names

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
DEFAULT_NAMESPACE = "drover"
DEFAULT_URL = controllers.DEFAULT_URL
SERVICES_QUEUE = "services"
PARAM_PREFIX = "DROVER_PARAM_"


def amqp_url() -> str:
    """The broker URL (`DROVER_AMQP_URL`), as the CLI reads it: one URL, or several separated by
    whitespace (the nodes of one cluster, tried in order)."""
    return os.environ.get("DROVER_AMQP_URL") or DEFAULT_AMQP_URL


def amqp_urls(spec: str | None = None) -> list[str]:
    """The URLs of a broker setting (`spec`, else `DROVER_AMQP_URL`), in order."""
    return (spec or amqp_url()).split()


def namespace() -> str:
    """The namespace (`DROVER_NAMESPACE`); any other than `drover` prefixes every queue."""
    ns = os.environ.get("DROVER_NAMESPACE") or DEFAULT_NAMESPACE
    try:
        return names.check_namespace(ns)
    except names.InvalidName as e:
        raise names.InvalidName(e.kind, e.value, f"{e.reason} (DROVER_NAMESPACE)") from None


def controller_url() -> str:
    """The active controller's HTTP base URL, without a trailing slash: `DROVER_URL` holds one
    URL, or several separated by whitespace (every controller of the namespace), of which the
    first that answers as the active controller is used (see `controllers`)."""
    return controllers.of().active()


def token() -> str | None:
    """The controller's API token (`DROVER_TOKEN`), or None when it needs none."""
    return os.environ.get("DROVER_TOKEN") or None


def auth_headers(url: str) -> dict[str, str]:
    """`Authorization` for a request to `url` when it goes to a listed controller (`DROVER_URL`)
    and a token is set; the token is never sent to any other address."""
    return controllers.of().auth_headers(url)


def services_queue(ns: str) -> str:
    """The broker queue the controller takes submissions from: `services`, or `<ns>.services`."""
    return SERVICES_QUEUE if ns == DEFAULT_NAMESPACE else f"{ns}.{SERVICES_QUEUE}"


def dead_queue(ns: str) -> str:
    """Where the broker sends messages nobody could handle."""
    return f"{ns}.dead"


def submit_exchange(ns: str) -> str:
    """The exchange submissions are published to; it reaches the services queue only."""
    return f"{ns}.submit"


QUEUE_TYPES = ("classic", "quorum")
DEFAULT_DELIVERY_LIMIT = 50


def queue_arguments(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The arguments of a namespace's consumed queues beyond their dead-letter route, as the CLI
    declares them for `DROVER_QUEUE_TYPE` (`classic` by default: priorities; `quorum`: a quorum
    queue with `DROVER_DELIVERY_LIMIT` deliveries, 50 by default)."""
    env = os.environ if environ is None else environ
    kind = env.get("DROVER_QUEUE_TYPE") or "classic"
    if kind not in QUEUE_TYPES:
        raise ValueError(
            f"DROVER_QUEUE_TYPE={kind!r}: use classic (one broker node) or quorum (a cluster), "
            "the same as the controller's --queue-type"
        )
    if kind == "classic":
        return {"x-max-priority": 9}
    text = env.get("DROVER_DELIVERY_LIMIT") or str(DEFAULT_DELIVERY_LIMIT)
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"DROVER_DELIVERY_LIMIT={text!r}: expected a whole number of at least 1")
    return {"x-queue-type": "quorum", "x-delivery-limit": int(text)}


def dead_queue_arguments(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The dead-letter queue's arguments: its type alone (nothing is consumed off it by drover)."""
    args = queue_arguments(environ)
    return {"x-queue-type": args["x-queue-type"]} if "x-queue-type" in args else {}


DEFAULT_MAX_MESSAGE_SIZE = 64 << 20
_SIZE_SHIFTS = {"": 0, "b": 0, "k": 10, "kib": 10, "m": 20, "mib": 20, "g": 30, "gib": 30, "t": 40, "tib": 40}


def max_message_size(environ: Mapping[str, str] | None = None) -> int:
    """The largest message the SDK publishes (`DROVER_MAX_MESSAGE_SIZE`, e.g. `64MiB`), as the
    CLI reads it."""
    text = (os.environ if environ is None else environ).get("DROVER_MAX_MESSAGE_SIZE") or ""
    if not text.strip():
        return DEFAULT_MAX_MESSAGE_SIZE
    stripped = text.strip()
    digits = stripped[: len(stripped) - len(stripped.lstrip("0123456789"))]
    unit = stripped[len(digits):].strip().lower()
    if not digits or unit not in _SIZE_SHIFTS:
        raise ValueError(
            f"DROVER_MAX_MESSAGE_SIZE={text!r}: expected a whole number of bytes with an optional "
            "unit K, M, G, T (KiB, MiB, GiB, TiB), e.g. 64MiB"
        )
    return int(digits) << _SIZE_SHIFTS[unit]


def redact(url: str) -> str:
    """`url` (or each URL of a whitespace-separated list) with its password replaced, safe to
    print."""
    if len(url.split()) > 1:
        return " ".join(redact(u) for u in url.split())
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


def param_overrides(declared: Iterable[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Parameter values set at launch by `DROVER_PARAM_<NAME>` variables, by declared name.

    `<NAME>` is the parameter's name as declared or in any case (`DROVER_PARAM_ROWS` sets
    `rows`); a variable naming no declared parameter is left out with a warning.
    """
    env = os.environ if environ is None else environ
    names_by_folded: dict[str, list[str]] = {}
    for name in declared:
        names_by_folded.setdefault(name.casefold(), []).append(name)
    found: dict[str, str] = {}
    for var, value in sorted(env.items()):
        if not var.startswith(PARAM_PREFIX) or len(var) == len(PARAM_PREFIX):
            continue
        given = var[len(PARAM_PREFIX):]
        matches = names_by_folded.get(given.casefold(), [])
        chosen: str | None = given if given in matches else (matches[0] if len(matches) == 1 else None)
        if chosen is None:
            known = ", ".join(sorted(n for ns in names_by_folded.values() for n in ns)) or "none"
            why = "is ambiguous" if matches else "is not a parameter of this pipeline"
            warnings.warn(f"{var} {why} (declared: {known}); ignored", stacklevel=3)
            continue
        found[chosen] = value
    return found

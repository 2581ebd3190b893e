"""Where drover lives: broker URL, namespace, controller URL and token from DROVER_* variables, and queue names."""
import os
import re
import urllib.parse

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
DEFAULT_NAMESPACE = "drover"
DEFAULT_URL = "http://127.0.0.1:8470"
SERVICES_QUEUE = "services"


def amqp_url():
    """The broker URL (`DROVER_AMQP_URL`), as the CLI reads it."""
    return os.environ.get("DROVER_AMQP_URL") or DEFAULT_AMQP_URL


def namespace():
    """The namespace (`DROVER_NAMESPACE`); any other than `drover` prefixes every queue."""
    ns = os.environ.get("DROVER_NAMESPACE") or DEFAULT_NAMESPACE
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", ns) or ns in (".", ".."):
        raise ValueError(f"invalid DROVER_NAMESPACE {ns!r}: use letters, digits, '_', '-' and '.'")
    return ns


def controller_url():
    """The controller's HTTP base URL (`DROVER_URL`), without a trailing slash."""
    return (os.environ.get("DROVER_URL") or DEFAULT_URL).rstrip("/")


def token():
    """The controller's API token (`DROVER_TOKEN`), or None when it needs none."""
    return os.environ.get("DROVER_TOKEN") or None


def auth_headers(url):
    """`Authorization` for a request to `url` when it goes to the controller and a token is set;
    the token is never sent to any other host."""
    secret = token()
    if not secret:
        return {}
    target, controller = urllib.parse.urlsplit(url), urllib.parse.urlsplit(controller_url())
    if (target.scheme, target.netloc) != (controller.scheme, controller.netloc):
        return {}
    return {"authorization": f"Bearer {secret}"}


def services_queue(ns):
    """The broker queue the controller takes submissions from: `services`, or `<ns>.services`."""
    return SERVICES_QUEUE if ns == DEFAULT_NAMESPACE else f"{ns}.{SERVICES_QUEUE}"


def dead_queue(ns):
    """Where the broker sends messages nobody could handle."""
    return f"{ns}.dead"


def redact(url):
    """`url` with its password replaced, safe to print."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))

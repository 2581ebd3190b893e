"""Publishing messages to the controller's services queue over AMQP (pika and msgpack load lazily).

Step code imports `drover` in environments without pika or msgpack, so neither is imported
until something is actually published.
"""
from __future__ import annotations

from typing import Any

from . import settings


class PublishError(RuntimeError):
    """The broker did not take a message."""


def encode(message: dict[str, Any]) -> bytes:
    """Named-field msgpack, the encoding every drover component reads."""
    import msgpack

    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def _connect(url: str) -> Any:
    import pika
    import pika.exceptions

    try:
        return pika.BlockingConnection(pika.URLParameters(url))
    except pika.exceptions.AMQPConnectionError as e:
        raise PublishError(
            f"RabbitMQ is not reachable at {settings.redact(url)} ({e!r}); start drover with "
            "`drover up` on a machine running RabbitMQ (scripts/ensure-rabbitmq.sh starts one), "
            "or set DROVER_AMQP_URL to your broker"
        ) from e


def _declare(connection: Any, ns: str) -> Any:
    """Declares the services and dead-letter queues as the controller does, so a message sent
    before the controller first starts waits for it instead of being dropped."""
    import pika.exceptions

    channel = connection.channel()
    channel.queue_declare(settings.dead_queue(ns), durable=True)
    args = {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": settings.dead_queue(ns),
        "x-max-priority": 9,
    }
    queue = settings.services_queue(ns)
    try:
        channel.queue_declare(queue, durable=True, arguments=args)
        return channel
    except pika.exceptions.ChannelClosedByBroker as e:
        if e.reply_code != 406:
            raise
    # The queue exists with arguments the broker considers different: use it as it is.
    channel = connection.channel()
    channel.queue_declare(queue, passive=True)
    return channel


def publish(message: dict[str, Any], url: str | None = None, ns: str | None = None) -> None:
    """Publishes one message to the services queue with confirms; raises PublishError unless
    the broker confirms that a queue took it."""
    import pika
    import pika.exceptions

    url = url or settings.amqp_url()
    ns = ns or settings.namespace()
    body = encode(message)
    connection = _connect(url)
    try:
        channel = _declare(connection, ns)
        channel.confirm_delivery()
        properties = pika.BasicProperties(
            delivery_mode=2,
            content_type="application/msgpack",
            message_id=message["id"],
            type=message["kind"],
        )
        queue = settings.services_queue(ns)
        try:
            channel.basic_publish("", queue, body, properties=properties, mandatory=True)
        except pika.exceptions.UnroutableError as e:
            raise PublishError(f"no queue took the {message['kind']} message for {queue!r}") from e
        except pika.exceptions.NackError as e:
            raise PublishError(f"the broker refused the {message['kind']} message for {queue!r}") from e
    except pika.exceptions.AMQPError as e:
        raise PublishError(f"publishing to {settings.redact(url)} failed: {e!r}") from e
    finally:
        if connection.is_open:
            connection.close()

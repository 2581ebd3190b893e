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

    # Several URLs (the nodes of one cluster): pika tries each in order until one answers.
    params = [pika.URLParameters(u) for u in settings.amqp_urls(url)]
    if not params:
        raise PublishError("no broker URL given: DROVER_AMQP_URL is empty")
    try:
        return pika.BlockingConnection(params)
    except pika.exceptions.AMQPConnectionError as e:
        raise PublishError(
            f"RabbitMQ is not reachable at {settings.redact(url)} ({e!r}); start drover with "
            "`drover up` on a machine running RabbitMQ (scripts/ensure-rabbitmq.sh starts one), "
            "or set DROVER_AMQP_URL to your broker"
        ) from e


def _declare(connection: Any, ns: str) -> Any:
    """Declares what the controller declares for submissions (the services and dead-letter
    queues, the submit exchange and its binding), so a message sent before the controller first
    starts waits for it. A broker user allowed to publish only (per-role users, see
    deploy/README.md) may not declare: then the controller has, and the channel is reopened."""
    import pika.exceptions

    dead = settings.dead_queue(ns)
    queue = settings.services_queue(ns)
    declared = [
        (dead, settings.dead_queue_arguments()),
        (queue, {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead, **settings.queue_arguments()}),
    ]
    channel = connection.channel()
    try:
        for name, args in declared:
            try:
                channel.queue_declare(name, durable=True, arguments=args)
            except pika.exceptions.ChannelClosedByBroker as e:
                if e.reply_code != 406:
                    raise
                # The queue exists with arguments the broker considers different (another
                # DROVER_QUEUE_TYPE): use it as it is, the controller declared it.
                channel = connection.channel()
        exchange = settings.submit_exchange(ns)
        channel.exchange_declare(exchange, exchange_type="direct", durable=True)
        channel.queue_bind(queue, exchange, routing_key=queue)
        return channel
    except pika.exceptions.ChannelClosedByBroker as e:
        if e.reply_code != 403:
            raise
    return connection.channel()


def publish(message: dict[str, Any], url: str | None = None, ns: str | None = None) -> None:
    """Publishes one message to the services queue through the submit exchange, with confirms;
    raises PublishError unless the broker confirms that a queue took it, and before connecting
    when the message is larger than `DROVER_MAX_MESSAGE_SIZE` (64 MiB by default)."""
    import pika
    import pika.exceptions

    url = url or settings.amqp_url()
    ns = ns or settings.namespace()
    body = encode(message)
    limit = settings.max_message_size()
    if len(body) > limit:
        raise PublishError(
            f"the {message['kind']} message is {len(body)} bytes, more than the limit of {limit} "
            "bytes (DROVER_MAX_MESSAGE_SIZE); nothing was submitted: make the pipeline smaller, "
            "or raise the limit here and on the controller (--max-message-size)"
        )
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
        exchange = settings.submit_exchange(ns)
        try:
            channel.basic_publish(exchange, queue, body, properties=properties, mandatory=True)
        except pika.exceptions.UnroutableError as e:
            raise PublishError(f"no queue took the {message['kind']} message for {queue!r}") from e
        except pika.exceptions.NackError as e:
            raise PublishError(f"the broker refused the {message['kind']} message for {queue!r}") from e
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code == 404:
                raise PublishError(
                    f"the exchange {exchange!r} does not exist: start the controller of namespace {ns!r} "
                    "once (it declares it), or submit as a broker user allowed to declare"
                ) from e
            raise
    except pika.exceptions.AMQPError as e:
        raise PublishError(f"publishing to {settings.redact(url)} failed: {e!r}") from e
    finally:
        if connection.is_open:
            connection.close()

"""Submitting through the real RabbitMQ on 127.0.0.1:5672, in a namespace of the test's own."""
import msgpack
import pika
import pytest

import seed_pipeline
from conftest import AMQP_URL
from drover import settings, submit


def take_one(queue):
    """The one message waiting on `queue`, decoded, with its properties."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        method, properties, body = connection.channel().basic_get(queue, auto_ack=True)
        assert method is not None, f"nothing on {queue}"
        return properties, msgpack.unpackb(body, raw=False)
    finally:
        connection.close()


def test_start_publishes_the_submit_to_the_services_queue(namespace, capsys, monkeypatch):
    monkeypatch.setenv("DROVER_URL", "http://127.0.0.1:1/")
    pipe = seed_pipeline.build("/tmp/iris.pkl")
    expected = pipe._submit_message()
    assert pipe.start(wait=False) is True
    properties, message = take_one(f"{namespace}.services")
    assert properties.delivery_mode == 2 and properties.content_type == "application/msgpack"
    assert message["kind"] == "submit" and message["body"]["run_id"] == pipe.id
    assert message["body"]["spec"] == expected["body"]["spec"]
    assert capsys.readouterr().out == (
        f"drover: pipeline 'Pipeline demo' submitted as run {pipe.id}: http://127.0.0.1:1/runs/{pipe.id}\n"
    )
    with pytest.raises(RuntimeError, match="already started"):
        pipe.start(wait=False)


def test_stop_publishes_an_abort(namespace):
    pipe = seed_pipeline.build("/tmp/iris.pkl")
    pipe.start(wait=False)
    take_one(f"{namespace}.services")
    pipe.stop()
    _, message = take_one(f"{namespace}.services")
    assert message["kind"] == "abort"
    assert message["body"]["run_id"] == pipe.id and message["body"]["step"] is None
    assert "stopped" in message["body"]["reason"]


def test_an_unreachable_broker_says_how_to_fix_it(monkeypatch):
    monkeypatch.setenv("DROVER_AMQP_URL", "amqp://guest:secret@127.0.0.1:1/%2f")
    pipe = seed_pipeline.build("/tmp/iris.pkl")
    with pytest.raises(submit.PublishError) as e:
        pipe.start(wait=False)
    text = str(e.value)
    assert "RabbitMQ is not reachable at amqp://guest:***@127.0.0.1:1/%2f" in text
    assert "drover up" in text and "secret" not in text
    assert pipe.id is None


def test_a_dead_first_broker_of_a_list_is_skipped(namespace, monkeypatch):
    monkeypatch.setenv("DROVER_URL", "http://127.0.0.1:1/")
    monkeypatch.setenv("DROVER_AMQP_URL", f"amqp://guest:secret@127.0.0.1:1/%2f\n  {AMQP_URL}")
    pipe = seed_pipeline.build("/tmp/iris.pkl")
    assert pipe.start(wait=False) is True
    _, message = take_one(f"{namespace}.services")
    assert message["kind"] == "submit" and message["body"]["run_id"] == pipe.id


def test_when_no_broker_of_a_list_answers_each_is_named_without_its_password(monkeypatch):
    monkeypatch.setenv(
        "DROVER_AMQP_URL", "amqp://guest:one@127.0.0.1:1/%2f amqp://guest:two@127.0.0.1:2/%2f"
    )
    pipe = seed_pipeline.build("/tmp/iris.pkl")
    with pytest.raises(submit.PublishError) as e:
        pipe.start(wait=False)
    text = str(e.value)
    assert "amqp://guest:***@127.0.0.1:1/%2f amqp://guest:***@127.0.0.1:2/%2f" in text
    assert "one@" not in text and "two@" not in text


def test_a_message_past_the_size_limit_is_refused_before_publishing(namespace, monkeypatch):
    monkeypatch.setenv("DROVER_MAX_MESSAGE_SIZE", "1KiB")
    # Nothing may be published: an unreachable broker would fail differently.
    monkeypatch.setenv("DROVER_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
    pipe = seed_pipeline.build("/tmp/iris.pkl")
    with pytest.raises(submit.PublishError) as e:
        pipe.start(wait=False)
    text = str(e.value)
    assert "more than the limit of 1024 bytes" in text and "DROVER_MAX_MESSAGE_SIZE" in text
    assert pipe.id is None


def test_submissions_go_through_the_submit_exchange(namespace):
    pipe = seed_pipeline.build("/tmp/iris.pkl")
    pipe.start(wait=False)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        method, _, _ = connection.channel().basic_get(f"{namespace}.services", auto_ack=True)
        assert method is not None and method.exchange == f"{namespace}.submit"
    finally:
        connection.close()


def test_the_message_size_limit_reads_as_the_cli_reads_it():
    from drover import settings

    assert settings.max_message_size({}) == 64 << 20
    assert settings.max_message_size({"DROVER_MAX_MESSAGE_SIZE": "1024"}) == 1024
    assert settings.max_message_size({"DROVER_MAX_MESSAGE_SIZE": "3 kib"}) == 3 << 10
    assert settings.max_message_size({"DROVER_MAX_MESSAGE_SIZE": "16MiB"}) == 16 << 20
    for bad in ("lots", "12 parsecs", "MiB"):
        with pytest.raises(ValueError, match="DROVER_MAX_MESSAGE_SIZE"):
            settings.max_message_size({"DROVER_MAX_MESSAGE_SIZE": bad})


def test_quorum_queues_are_declared_as_the_controller_declares_them(namespace, monkeypatch):
    monkeypatch.setenv("DROVER_URL", "http://127.0.0.1:1/")
    monkeypatch.setenv("DROVER_QUEUE_TYPE", "quorum")
    monkeypatch.setenv("DROVER_DELIVERY_LIMIT", "7")
    pipe = seed_pipeline.build("/tmp/iris.pkl")
    assert pipe.start(wait=False) is True
    take_one(f"{namespace}.services")
    # Declaring again with other arguments closes the channel with 406; with the same, it passes.
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.queue_declare(f"{namespace}.dead", durable=True, arguments={"x-queue-type": "quorum"})
        same = {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": f"{namespace}.dead",
            "x-queue-type": "quorum",
            "x-delivery-limit": 7,
        }
        channel.queue_declare(f"{namespace}.services", durable=True, arguments=same)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            channel.queue_declare(f"{namespace}.services", durable=True, arguments={**same, "x-delivery-limit": 8})
        assert e.value.reply_code == 406
    finally:
        connection.close()
    # A submitter left with the classic default still publishes into the quorum namespace.
    monkeypatch.delenv("DROVER_QUEUE_TYPE")
    again = seed_pipeline.build("/tmp/iris.pkl")
    assert again.start(wait=False) is True
    take_one(f"{namespace}.services")


def test_an_unknown_queue_type_says_which_exist():
    with pytest.raises(ValueError, match=r"use classic .* or quorum"):
        settings.queue_arguments({"DROVER_QUEUE_TYPE": "stream"})
    with pytest.raises(ValueError, match="at least 1"):
        settings.queue_arguments({"DROVER_QUEUE_TYPE": "quorum", "DROVER_DELIVERY_LIMIT": "0"})
    assert settings.queue_arguments({}) == {"x-max-priority": 9}

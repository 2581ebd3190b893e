"""Celery as the peer drover's fan-out and chain are compared with (bench 10).

A real Celery worker on the same RabbitMQ, set up as its users run it for reliability: the prefork
pool with one process per CPU, ``task_acks_late=True`` (a task is acked after it ran), persistent
messages (delivery_mode 2) published with confirms, and no result backend. Its queue and exchange
are named after the bench's namespace, so runs never share them; they are deleted at the end.

    python bench/celery_peer.py fanout N     submit N no-op tasks, time until all have run
    python bench/celery_peer.py chain N      one chain of N tasks, the time between their starts

Without a result backend, completion is counted through a file the tasks append to: each
fan-out task appends one byte (``O_APPEND``, one ``write``), each chain task a line with its
start time in nanoseconds. Prints one JSON object on its last line.

This file is also the worker's app module (``celery -A celery_peer worker``): the broker URL
and the queue come from the environment the bench sets for both.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import celery
from celery import Celery, chain

BROKER = os.environ.get("DROVER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
QUEUE = os.environ.get("DROVER_NAMESPACE", "bench-celery") + ".celery"

app = Celery("celery_peer", broker=BROKER)
app.conf.update(
    task_acks_late=True,
    task_default_delivery_mode="persistent",
    task_ignore_result=True,
    result_backend=None,
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    broker_transport_options={"confirm_publish": True},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop(path: str) -> None:
    """Marks one task done."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b".")
    finally:
        os.close(fd)


@app.task(name="stamp")
def stamp(path: str) -> None:
    """Records when this link of the chain started."""
    line = f"{time.time_ns()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def wait_until(done: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(
                f"celery peer: timed out after {timeout:.0f} s waiting for {what}"
            )
        time.sleep(0.005)


def start_worker(log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = (
        str(Path(__file__).resolve().parent) + os.pathsep + env.get("PYTHONPATH", "")
    )
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "celery_peer",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        str(os.cpu_count() or 1),
        "--queues",
        QUEUE,
        "--loglevel",
        "WARNING",
        "--hostname",
        f"{QUEUE}@%h",
    ]
    out = log.open("wb")
    return subprocess.Popen(
        cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def delete_queue() -> None:
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        channel.queue_delete(QUEUE)
        channel.exchange_delete(QUEUE)


def fanout(n: int, work: Path) -> dict[str, object]:
    done = work / "fanout.count"
    # Warm-up: the worker is up and its pool started once one task has run.
    noop.apply_async((str(done),))
    wait_until(lambda: size(done) >= 1, "the worker's first task", 120)
    start = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            noop.apply_async((str(done),), producer=producer)
    submitted = time.perf_counter() - start
    wait_until(lambda: size(done) >= n + 1, f"{n} tasks to run", 60 + n / 10)
    secs = time.perf_counter() - start
    return {"tasks": n, "rate": n / secs, "secs": secs, "submit_secs": submitted}


def chained(n: int, work: Path) -> dict[str, object]:
    stamps = work / "chain.stamps"
    warm = work / "chain.warm"
    noop.apply_async((str(warm),))
    wait_until(lambda: size(warm) >= 1, "the worker's first task", 120)
    chain(*(stamp.si(str(stamps)) for _ in range(n))).apply_async()
    wait_until(
        lambda: stamps.exists() and stamps.read_text().count("\n") >= n,
        f"a chain of {n} tasks",
        60 + n,
    )
    starts = [int(line) for line in stamps.read_text().split()]
    hops = sorted((b - a) / 1e6 for a, b in itertools.pairwise(starts))
    p99 = hops[min(len(hops) - 1, round(0.99 * (len(hops) - 1)))]
    return {"tasks": n, "hop_p50_ms": statistics.median(hops), "hop_p99_ms": p99}


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("fanout", "chain"):
        raise SystemExit("usage: celery_peer.py fanout|chain N")
    n = int(sys.argv[2])
    work = Path.cwd() / f"celery-{sys.argv[1]}-{time.time_ns()}"
    work.mkdir()
    worker = start_worker(work / "worker.log")
    try:
        result = fanout(n, work) if sys.argv[1] == "fanout" else chained(n, work)
    except BaseException:
        sys.stderr.write((work / "worker.log").read_text(errors="replace"))
        raise
    finally:
        stop_worker(worker)
        delete_queue()
    result["concurrency"] = os.cpu_count() or 1
    result["celery"] = celery.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()

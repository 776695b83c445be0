"""``crm.serving``: with several worker processes, each listens on a socket of its own
(``PortShare``), so connections opened at once are spread among them, and a port already
taken is refused rather than shared."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi import FastAPI

from bench.procs import listening_sockets
from crm.serving import PortShare

ROOT = Path(__file__).resolve().parents[2]


def pid_app() -> FastAPI:
    """The app each worker of the ``serve`` test builds: it answers with its pid."""
    app = FastAPI()
    app.get("/pid")(lambda: {"pid": os.getpid()})
    return app


def test_each_unpickled_share_is_a_listening_socket_and_the_kernel_spreads_connections() -> None:
    with PortShare("127.0.0.1", 0) as share:
        workers = [pickle.loads(pickle.dumps(share)) for _ in range(2)]  # as uvicorn's spawn
        try:
            assert listening_sockets(share.port) == 2  # the reservation never listens
            clients = [socket.create_connection(("127.0.0.1", share.port)) for _ in range(32)]
            accepted = []
            for sock in workers:
                sock.setblocking(False)
                count = 0
                while True:
                    try:
                        conn, _ = sock.accept()
                    except BlockingIOError:
                        break
                    conn.close()
                    count += 1
                accepted.append(count)
            for client in clients:
                client.close()
        finally:
            for sock in workers:
                sock.close()
    assert sum(accepted) == 32
    assert min(accepted) >= 6, accepted  # 1 in 9,000 to fail by chance


def test_a_port_something_listens_on_is_refused_not_shared() -> None:
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        with pytest.raises(OSError):
            PortShare("127.0.0.1", plain.getsockname()[1])
    with PortShare("127.0.0.1", 0) as first:
        worker = pickle.loads(pickle.dumps(first))
        try:
            with pytest.raises(OSError):  # another LoopCRM on the same port
                PortShare("127.0.0.1", first.port)
        finally:
            worker.close()


def test_serve_with_two_workers_serves_connections_opened_at_once_from_both() -> None:
    with PortShare("127.0.0.1", 0) as probe:
        port = probe.port
    code = (
        "from crm.serving import serve; from crm.cli_process import LogLevel; "
        "from tests.unit.test_serving_workers import pid_app; "
        f"serve(pid_app, 'tests.unit.test_serving_workers:pid_app', workers=2, "
        f"host='127.0.0.1', port={port}, log_level=LogLevel.warning)"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while listening_sockets(port) < 2:
            assert server.poll() is None, server.communicate()[0].decode()
            assert time.monotonic() < deadline, "the workers did not start listening"
            time.sleep(0.1)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
        pids = [_pid_over(client) for client in clients]  # all 32 were waiting at once
        served = sorted(pids.count(pid) for pid in set(pids))
        # one shared socket: 16 went 2/14 in 3 of 4 runs (the worker that woke first)
        assert len(served) == 2 and served[0] >= 6, served  # 1 in 9,000 by chance
        assert server.pid not in pids
    finally:
        server.terminate()
        server.wait(30)


def _pid_over(client: socket.socket) -> int:
    with client:
        client.sendall(b"GET /pid HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := client.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return int(json.loads(body)["pid"])

"""The link proxy forwards every byte, in order, both ways (bench/ only: `pytest bench/test_linkproxy.py`).

No timing is asserted here: the delay it adds is measured and printed by run.py instead.
"""
import os
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import linkproxy  # noqa: E402


def test_bytes_pass_unchanged_and_in_order_both_ways():
    with socket.create_server(("127.0.0.1", 0)) as echo_listener, socket.create_server(("127.0.0.1", 0)) as front:
        target = echo_listener.getsockname()

        def echo():
            conn, _ = echo_listener.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

        def proxy():
            client, _ = front.accept()
            linkproxy._connection(client, target, 0.0005)

        for run in (echo, proxy):
            threading.Thread(target=run, daemon=True).start()
        sent = os.urandom(1 << 20)
        with socket.create_connection(front.getsockname(), timeout=10) as conn:
            threading.Thread(target=conn.sendall, args=(sent,), daemon=True).start()
            received = bytearray()
            while len(received) < len(sent):
                received += conn.recv(65536)
    assert bytes(received) == sent

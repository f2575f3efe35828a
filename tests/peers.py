"""Hostile peers for the serving tests: a seeded mix of connections that misbehave in every phase.

Each peer picks, from its own seeded generator, what it does while connecting and sending (send
nothing; dribble the request line, the headers or the body; a whole request, several pipelined,
thousands of headers, an oversized body) and what it does after (read the answer, one byte at a
time, never read, half-close and wait, linger, reset), then does it again on a new connection until
the run ends. Run it as its own process, so that the peers never compete with the honest client's
thread for one interpreter: `python -m tests.peers --port P --count N --seed S --seconds T` prints
one JSON line saying what was chosen and what the server answered.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct
import time
from collections import Counter

OPENINGS = ("silent", "dribble_line", "dribble_headers", "dribble_body", "whole", "pipeline", "many_headers",
            "oversized", "oversized_chunked", "fire_and_forget")
REQUESTS = ("healthz", "forged", "unsigned", "http10", "close", "not_found", "garbage", "too_many_headers")
AFTERWARDS = ("read", "read_bytewise", "never_read", "half_close", "linger", "reset", "close")
BODY = b'{"message_uuid":"aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee","to":"447700900000","from":"AcmeShop",' \
       b'"timestamp":"2026-01-01T00:00:00Z","status":"delivered"}'


def request(kind: str, rng: random.Random) -> bytes:
    """One whole request of the given kind, as a hostile peer would write it."""
    if kind == "healthz":
        return b"GET /healthz HTTP/1.1\r\nHost: receiver\r\n\r\n"
    if kind == "http10":
        return b"GET /healthz HTTP/1.0\r\n\r\n"
    if kind == "close":
        return b"GET /healthz HTTP/1.1\r\nHost: receiver\r\nConnection: close\r\n\r\n"
    if kind == "not_found":
        return b"GET /" + bytes(rng.choice(b"abcdefgh") for _ in range(12)) + b" HTTP/1.1\r\nHost: receiver\r\n\r\n"
    if kind == "garbage":
        return bytes(rng.randrange(32, 127) for _ in range(rng.randrange(5, 200))) + b"\r\n\r\n"
    if kind == "too_many_headers":
        return b"GET /healthz HTTP/1.1\r\nHost: receiver\r\n" + b"X-A: b\r\n" * rng.randrange(101, 400) + b"\r\n"
    token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJWb25hZ2UifQ." + "x" * 43
    auth = f"Authorization: Bearer {token}\r\n".encode() if kind == "forged" else b""
    return (b"POST /webhooks/message-status HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/json\r\n"
            + auth + f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY)


class Peer:
    """One hostile peer: the same behaviour, connection after connection, until `until`."""

    def __init__(self, number: int, port: int, rng: random.Random, until: float, tally: Counter):
        self.port, self.rng, self.until, self.tally = port, rng, until, tally
        self.opening = rng.choice(OPENINGS)
        self.kind = rng.choice(REQUESTS)
        self.after = rng.choice(AFTERWARDS)
        # between its connections; one that fires and forgets comes back within a tenth of a second. (Flat
        # out, the peers' one process would take a core of this machine's two: a measure of the machine.)
        self.pause = rng.uniform(0.02, 0.2) if self.opening == "fire_and_forget" else rng.uniform(0.5, 3.0)
        if self.opening == "fire_and_forget":
            self.after = "reset"
        self.delay = rng.uniform(0.05, 1.0)  # between the bytes it dribbles
        self.small_window = rng.random() < 0.5  # a tiny receive buffer: what we send it backs up sooner
        tally[f"opening:{self.opening}"] += 1
        tally[f"after:{self.after}"] += 1

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.rng.uniform(0, 0.5))
        while loop.time() < self.until:
            sock = socket.socket()
            if self.small_window:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", self.port)), 5)
                self.tally["connections"] += 1
                await self.once(loop, sock)
            except (OSError, asyncio.TimeoutError) as exc:
                self.tally[f"error:{type(exc).__name__}"] += 1
            finally:
                sock.close()
            await asyncio.sleep(self.pause)

    async def hold(self, loop) -> None:
        await asyncio.sleep(max(0.0, self.until - loop.time()))

    async def dribble(self, loop, sock, data: bytes, step: int = 1) -> None:
        for start in range(0, len(data), step):
            if loop.time() >= self.until:
                return
            await loop.sock_sendall(sock, data[start:start + step])
            await asyncio.sleep(self.delay)

    async def once(self, loop, sock) -> None:
        opening, rng = self.opening, self.rng
        if opening == "silent":
            return await self.wait_for_close(loop, sock)
        one = request(self.kind, rng)
        head, _, body = one.partition(b"\r\n\r\n")
        if opening == "dribble_line":
            await self.dribble(loop, sock, one)
        elif opening == "dribble_headers":
            line, _, headers = head.partition(b"\r\n")
            await loop.sock_sendall(sock, line + b"\r\n")
            await self.dribble(loop, sock, headers + b"\r\n\r\n" + body, step=8)
        elif opening == "dribble_body":
            declared = len(body) or 200
            await loop.sock_sendall(sock, b"POST /webhooks/message-status HTTP/1.1\r\nHost: receiver\r\n"
                                    + f"Content-Length: {declared}\r\n\r\n".encode())
            await self.dribble(loop, sock, (body or b"x" * declared), step=4)
        elif opening in ("whole", "fire_and_forget"):
            await loop.sock_sendall(sock, one)
        elif opening == "pipeline":
            await loop.sock_sendall(sock, b"".join(request(self.kind if self.kind not in ("garbage", "close", "http10")
                                                           else "healthz", rng) for _ in range(rng.randrange(2, 300))))
        elif opening == "many_headers":
            await loop.sock_sendall(sock, b"GET /healthz HTTP/1.1\r\nHost: receiver\r\n"
                                    + b"".join(b"X-H%d: %d\r\n" % (i, i) for i in range(rng.randrange(1000, 6000)))
                                    + b"\r\n")
        elif opening == "oversized":
            size = rng.randrange(2, 20) * 1024 * 1024
            await loop.sock_sendall(sock, b"POST /webhooks/message-status HTTP/1.1\r\nHost: receiver\r\n"
                                    + f"Content-Length: {size}\r\n\r\n".encode())
            await self.send_for_a_while(loop, sock, b"z" * 65536, 2.0)
        elif opening == "oversized_chunked":
            await loop.sock_sendall(sock, b"POST /webhooks/message-status HTTP/1.1\r\nHost: receiver\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n")
            await self.send_for_a_while(loop, sock, b"10000\r\n" + b"z" * 65536 + b"\r\n", 2.0)
        await self.afterwards(loop, sock)

    async def send_for_a_while(self, loop, sock, data: bytes, seconds: float) -> None:
        end = loop.time() + seconds
        while loop.time() < min(end, self.until):
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, data), 0.5)
            except asyncio.TimeoutError:
                pass

    async def afterwards(self, loop, sock) -> None:
        after = self.after
        if after == "read":
            answer = await self.read(loop, sock, 65536, 0.0)
            self.tally[f"answer:{answer[9:12].decode(errors='replace') or 'none'}"] += 1
        elif after == "read_bytewise":
            answer = await self.read(loop, sock, 1, self.delay / 10)
            self.tally[f"answer:{answer[9:12].decode(errors='replace') or 'none'}"] += 1
        elif after == "never_read":
            await self.hold(loop)
        elif after == "half_close":
            sock.shutdown(socket.SHUT_WR)
            await self.hold(loop)
        elif after == "linger":
            await asyncio.sleep(min(self.rng.uniform(1, 10), max(0.0, self.until - loop.time())))
        elif after == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async def read(self, loop, sock, size: int, pause: float) -> bytes:
        got = b""
        while loop.time() < self.until and len(got) < 1_000_000:
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, size), max(0.1, self.until - loop.time()))
            except (asyncio.TimeoutError, OSError):
                break
            if not chunk:
                break
            got += chunk
            if pause:
                await asyncio.sleep(pause)
        return got

    async def wait_for_close(self, loop, sock) -> None:
        started = loop.time()
        got = await self.read(loop, sock, 65536, 0.0)
        if not got:
            self.tally["silent closed by server"] += 1 if loop.time() < self.until else 0
        self.tally["silent seconds"] += int(loop.time() - started)


async def main(port: int, count: int, seed: int, seconds: float) -> Counter:
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    tally: Counter = Counter()
    master = random.Random(seed)
    peers = [Peer(n, port, random.Random(master.getrandbits(64)), until, tally) for n in range(count)]
    await asyncio.gather(*(peer.run() for peer in peers))
    return tally


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args()
    started = time.monotonic()
    found = asyncio.run(main(args.port, args.count, args.seed, args.seconds))
    found["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(dict(sorted(found.items()))), flush=True)

"""Costs measured in this process, without HTTP: signature verification per request, and storing one
callback (one durable commit) through storage.events.record_event on each backend, one caller at a time.
"""
from __future__ import annotations

import os
import tempfile
import time
import timeit
import uuid
from dataclasses import replace
from urllib.parse import urlencode

import servers
from callbacks import API_KEY, SECRET, compact

from devkit import samples
from receiver.kinds import KINDS
from receiver.storage import Storage
from receiver.storage import events as inbox
from receiver.storage.engines import make_engine, write_transaction
from receiver.webhooks.keyring import Keyring
from receiver.webhooks.payloads import callback
from receiver.webhooks.signatures import sign_jwt, sign_sms, verify_jwt, verify_sms

WIDE = 10**9  # a signature made once is verified many times: no clock check may fail


def _per_call_us(fn, seconds: float = 0.5) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    rounds = max(3, int(seconds / max(1e-9, timer.timeit(number) / number) / number))
    best = min(timer.repeat(repeat=min(rounds, 7), number=number))
    return best / number * 1e6


def signature_costs() -> dict[str, float]:
    """Microseconds per verification (best of several rounds)."""
    keyring = Keyring([SECRET])
    body = compact(samples.message_status("delivered", "whatsapp"))
    authorization = "Bearer " + sign_jwt(body, SECRET, api_key=API_KEY)
    costs = {"verify_jwt (Messages status, HS256 + payload_hash)":
             _per_call_us(lambda: verify_jwt(authorization, body, keyring, iat_leeway=WIDE))}
    for method in ("sha256", "md5hash"):
        params = sign_sms(dict(samples.delivery_receipt(), **{"api-key": API_KEY}), SECRET, method)
        costs[f"verify_sms (DLR, {method})"] = _per_call_us(lambda: verify_sms(params, keyring, method, window=WIDE))
    return costs


def storage_cost(url: str, count: int = 500) -> float:
    """Microseconds per record_event: one new callback, committed, with nobody else writing."""
    servers.init_database(url)
    engine = make_engine(url)
    try:
        payload = samples.delivery_receipt()
        query = urlencode(payload)
        found = callback(KINDS["delivery-receipt"], payload, body=b"", query=query, content_type="", headers={})
        start = time.perf_counter()
        for i in range(count):
            inbox.record_event(engine, replace(found, dedup_key=f"{found.dedup_key}|{i}|{uuid.uuid4().hex}"))
        return (time.perf_counter() - start) / count * 1e6
    finally:
        engine.dispose()


def worker_rate(url: str, count: int = 3000) -> float:
    """Events per second one worker loop processes, in this process, draining `count` stored
    callbacks of the realistic mix with the usual handlers (their log lines written to /dev/null)."""
    import json
    import logging
    import random

    from receiver.kinds import KINDS
    from receiver.platform.config import defaults
    from receiver.worker.loop import Worker

    servers.init_database(url)
    storage = Storage(url, 5.0)
    engine = storage.engine
    sink = logging.StreamHandler(open(os.devnull, "w"))
    loggers = [logging.getLogger(name) for name in ("handlers", "receiver")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    try:
        rows = []
        for kind, _, payload in samples.traffic(count, random.Random(7)):
            messages_api = KINDS[kind].transport.signature == "jwt"
            body, query = (json.dumps(payload).encode(), "") if messages_api else (b"", urlencode(payload))
            content_type = "application/json" if messages_api else ""
            rows.append(inbox.event_values(callback(KINDS[kind], payload, body=body, query=query, content_type=content_type,
                                                    headers={})))
        with write_transaction(engine) as conn:
            inbox.insert_events(conn, rows)
        for lg in loggers:
            lg.addHandler(sink)
            lg.setLevel(logging.INFO)
            lg.propagate = False
        worker = Worker(storage, defaults(), name="bench")
        start = time.perf_counter()
        done = worker.run_until_idle(max_events=count)
        return done / (time.perf_counter() - start)
    finally:
        for lg, (level, propagate) in zip(loggers, saved):
            lg.removeHandler(sink)
            lg.setLevel(level)
            lg.propagate = propagate
        sink.stream.close()
        storage.dispose()


def fsync_latency_us(directory: str, count: int = 300) -> tuple[float, float]:
    """(p50, p99) of write(4 KiB) + fsync in `directory`: the floor under a durable SQLite commit."""
    fd, path = tempfile.mkstemp(dir=directory)
    samples_ = []
    try:
        for _ in range(count):
            os.write(fd, b"x" * 4096)
            start = time.perf_counter()
            os.fsync(fd)
            samples_.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(path)
    samples_.sort()
    return samples_[len(samples_) // 2] * 1e6, samples_[int(len(samples_) * 0.99)] * 1e6

"""receiver.storage.state: a message's status moves forward only, its history keeps every status; a chunk's
statuses written together (record_statuses) end exactly as written one at a time (record_status)."""
import dataclasses
import shutil

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from devkit import samples
from receiver.storage import state
from receiver.storage.engines import make_engine
from receiver.storage.schema import message_history, messages
from schemas import load_event

STATUSES = sorted(state.STATUS_RANK) + ["unheard-of"]
EVENT = st.tuples(st.sampled_from(["m-1", "m-2", "m-3"]), st.sampled_from(STATUSES),
                  st.one_of(st.none(), st.sampled_from(["ref-a", "ref-b"])))


def _event(n: int, message_id: str, status: str, client_ref):
    payload = dict(samples.message_status("submitted"), message_uuid=message_id, status=status)
    return dataclasses.replace(load_event("message-status", payload), event_id=n, client_ref=client_ref)


def _state(engine):
    with engine.connect() as conn:
        rows = conn.execute(select(messages.c.message_id, messages.c.status, messages.c.status_rank,
                                   messages.c.client_ref, messages.c.channel).order_by(messages.c.message_id)).all()
        history = conn.execute(select(message_history.c.message_id, message_history.c.event_id,
                                      message_history.c.status, message_history.c.applied)
                               .order_by(message_history.c.event_id)).all()
    return rows, history


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.lists(EVENT, max_size=4), chunk=st.lists(EVENT, min_size=1, max_size=12))
@example(before=[], chunk=[("m-1", "submitted", "ref-a"), ("m-1", "delivered", None)])  # a ref kept across moves
@example(before=[("m-1", "delivered", None)], chunk=[("m-1", "delivered", "ref-a"), ("m-1", "read", None)])
def test_a_chunk_written_together_ends_as_one_at_a_time(tmp_path, sqlite_template, before, chunk):
    engines = []
    for name in ("one", "many"):
        path = tmp_path / f"{name}.sqlite3"
        shutil.copyfile(sqlite_template, path)
        engines.append(make_engine(f"sqlite:///{path}", durable=False))
    one, many = engines
    try:
        earlier = [_event(n, *e) for n, e in enumerate(before)]
        events = sorted((_event(100 + n, *e) for n, e in enumerate(chunk)), key=lambda e: (e.message_id, e.event_id))
        for engine in engines:  # the same messages already stored, one at a time
            with engine.begin() as conn:
                for event in earlier:
                    state.record_status(conn, event)
        with one.begin() as conn:
            singly = [state.record_status(conn, event) for event in events]
        with many.begin() as conn:
            together = state.record_statuses(conn, events)
        assert together == singly
        assert _state(many) == _state(one)
    finally:
        for engine in engines:
            with engine.begin() as conn:
                conn.execute(delete(message_history))
                conn.execute(delete(messages))
            engine.dispose()

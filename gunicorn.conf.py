"""gunicorn settings for production: `gunicorn 'app:create_app()'` reads this file from the repo root.

PORT and WEB_CONCURRENCY follow the Heroku-style conventions; the request timeout stays well under
Vonage's 15 s so a stuck request is recycled before Vonage gives up on it.
"""
import os
import tempfile

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '3000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads let one process hold many requests at once, so their callbacks share a commit
# (receiver/storage/groupcommit.py): a durable write per request is what limits a sync worker.
# gthread, except that a thread is given a connection only once its whole request has arrived:
# idle or slow clients cannot take the threads that acknowledge Vonage (receiver/serving.py).
worker_class = "receiver.serving.WholeRequestWorker"
threads = int(os.environ.get("WEB_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "10"))
graceful_timeout = 30  # the in-process worker finishes its current event inside this
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None  # "-" for stdout
errorlog = "-"
# The app must be built after the fork: it opens database connections and may start a thread.
preload_app = False


def on_starting(server):
    # Every worker process writes its Prometheus counters here; /metrics adds them up.
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = tempfile.mkdtemp(prefix="vonage-receiver-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):  # counters of a previous run would be added to this one's
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    # Start the in-process worker thread at boot rather than at the first request, so a backlog
    # left by a previous deploy is processed even before Vonage calls again.
    from receiver.supervisor import started_at_boot

    started_at_boot(worker.wsgi)

"""gunicorn settings for production: `gunicorn 'app:create_app()'` reads this file from the repo root.

PORT and WEB_CONCURRENCY follow the Heroku-style conventions; the request timeout stays well under
Vonage's 15 s so a stuck request is recycled before Vonage gives up on it.
"""
import os
import sys
import tempfile
import traceback


def _whole_number(name: str, value: str | None, default: int, low: int = 1, high: int | None = None) -> int:
    """The setting `name` (its environment value, else `default`); one line and exit 2 when it is not one."""
    if not value:
        return default
    try:
        number = int(value.strip())
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        limits = f"from {low} to {high}" if high is not None else f"of {low} or more"
        print(f"Error: {name}={value!r}: expected a whole number {limits}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    return number


bind = f"{os.environ.get('HOST', '0.0.0.0')}:{_whole_number('PORT', os.environ.get('PORT'), 3000, 1, 65535)}"
web_processes = _whole_number("WEB_CONCURRENCY", os.environ.get("WEB_CONCURRENCY"), 2)
# With WORKER_IN_WEB (the default) one process more runs the worker beside the web processes, supervised
# by gunicorn like them: out of their interpreter lock (receiver/worker/process.py).


def _worker_process() -> bool:
    from receiver.platform import config

    try:
        return config.from_env().get("WORKER_IN_WEB", True)
    except Exception:  # a setting that does not parse: the start check below says which, in one line
        return True


worker_process = _worker_process()
workers = web_processes + worker_process
# Threads let one process hold many requests at once, so their callbacks share a commit
# (receiver/storage/groupcommit.py): a durable write per request is what limits a sync worker.
# gthread, except that a thread is given a connection only once its whole request has arrived:
# idle or slow clients cannot take the threads that acknowledge Vonage (receiver/platform/serving.py).
worker_class = "receiver.platform.serving.NonBlockingWorker"
threads = _whole_number("WEB_THREADS", os.environ.get("WEB_THREADS"), 8)
timeout = _whole_number("GUNICORN_TIMEOUT", os.environ.get("GUNICORN_TIMEOUT"), 10, low=0)
graceful_timeout = 30  # the in-process worker finishes its current event inside this
keepalive = 5
# No SCRIPT_NAME or PATH_INFO from a proxy: the path a request names is the one the serving loop reads
# (it serves webhooks first by their path), and this app is served at the root.
forwarder_headers = ""
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None  # "-" for stdout
# The default format's %(r)s is the request line, query string included: an SMS API callback sent
# by GET carries the message text there. %(U)s is the path alone.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(f)s" "%(a)s"'
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
    _arrange_the_worker_process(server)  # before the check: the app it builds is a web process's
    _check_that_the_app_starts(server)
    for name in os.listdir(path):  # counters of a previous run (and of the check) would be added to this one's
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))


def on_reload(server):
    _arrange_the_worker_process(server)


def _arrange_the_worker_process(server):
    """Whether one process runs the worker, decided again here: `--env WORKER_IN_WEB=false` on the command
    line (deploy/vonage-receiver-web.service) is applied after this file is read, and only this project's
    worker class knows how to be the worker process (with another, each process runs a worker thread)."""
    from receiver.platform.serving import NonBlockingWorker
    from receiver.worker import process

    wanted = _worker_process() and issubclass(server.worker_class, NonBlockingWorker)
    server.num_workers = server.cfg.workers - worker_process + wanted  # `workers` above counted one if it guessed so
    if wanted:
        process.make_role()
    else:
        process.drop_role()


def _check_that_the_app_starts(server):
    """Build the app once before any worker, so that a setting it cannot start with is one line and
    exit 2 here rather than a boot traceback from every worker, retried forever by the platform.

    The app is built in a child of the master that exits afterwards: nothing it opens or imports (database
    connections, the app's modules) stays in the master, which keeps preload_app = False true: workers
    still import the code afresh, and a HUP still loads a new version.
    """
    pid = os.fork()
    if pid == 0:
        from click import ClickException

        status = 0
        try:
            app = server.app.load()
            storage = getattr(app, "extensions", {}).get("storage")
            if storage is not None:
                storage.dispose()  # close its connections properly
        except ClickException as exc:  # receiver.platform.config.ConfigError: one line naming the setting
            print(f"Error: {exc.format_message()}", file=sys.stderr)
            status = exc.exit_code
        except BaseException:  # a bug: the traceback is what its reader needs
            traceback.print_exc()
            status = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)  # no atexit handlers, no gunicorn cleanup: this process was never a server
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if status:
        raise SystemExit(status if status > 0 else 1)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    # Without a worker process (another worker class), start this process's worker thread at boot rather
    # than at the first request, so a backlog left by a previous deploy is processed before Vonage calls.
    from receiver.worker.supervisor import started_at_boot

    started_at_boot(worker.wsgi)

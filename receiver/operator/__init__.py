"""The operator's tools: the API, the console, the command line, metrics, per-minute traffic counts, retiring
an application and the Applications API, and re-signing stored callbacks."""

from werkzeug.routing import PathConverter


class AnyId(PathConverter):
    """A stored id in a URL path, whatever it holds: unlike `path`, it may begin or end with "/" or hold "//"
    (ids are attacker-controlled, and every stored message has a page). Rules using it set merge_slashes=False."""

    regex = ".+?"
    part_isolating = False


def init_app(app) -> None:
    app.url_map.converters["anyid"] = AnyId

"""receiver.platform.devfiles: the files development mode makes under instance/ (a signing secret, an admin
token), each made once, private, and the same for every process that starts at the same moment."""
from pathlib import Path

import pytest


def test_a_development_file_is_made_once_private_and_shared_by_processes_starting_together(tmp_path):
    import stat
    from concurrent.futures import ThreadPoolExecutor

    from receiver.platform.config import ConfigError
    from receiver.platform.devfiles import made_once

    made = iter(range(1000))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: made_once(str(tmp_path), "dev-x", lambda: f"value-{next(made)}"), range(8)))
    assert len({text for text, _ in results}) == 1 and sum(made_here for _, made_here in results) == 1
    assert stat.S_IMODE((tmp_path / "dev-x").stat().st_mode) == 0o600
    assert made_once(str(tmp_path), "dev-x", lambda: "other") == (results[0][0], False)
    (tmp_path / "dev-empty").write_text("")
    with pytest.raises(ConfigError, match="dev-empty is empty: delete it"):
        made_once(str(tmp_path), "dev-empty", lambda: "never")


def test_development_files_default_to_instance_beside_app_py():
    # Where dev.py prints the console's login URL from, and where .gitignore keeps instance/ out of git.
    from receiver.platform import config
    root = Path(__file__).resolve().parents[2]
    assert (root / "app.py").exists()
    assert config.SETTINGS["INSTANCE_PATH"][0] == str(root / "instance")
    assert config.PROJECT_ROOT == root

"""Other revisions of the project, checked out beside this one so one run can measure both.

Each revision gets a temporary `git worktree` of the repository that holds bench/; every worktree
made is removed on the way out, also on Ctrl-C. Nothing else in the repository is touched.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Tree:
    rev: str  # as given on the command line
    commit: str
    root: Path

    @property
    def name(self) -> str:
        return f"tree {self.rev}"


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise SystemExit(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def checked_out(revs: list[str]) -> Iterator[list[Tree]]:
    """A temporary worktree (detached) for each revision in `revs`."""
    parent = Path(tempfile.mkdtemp(prefix="receiver-trees-"))
    made: list[Path] = []
    try:
        trees = []
        for i, rev in enumerate(revs, 1):
            commit = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
            root = parent / f"tree-{i}"
            made.append(root)  # before adding: an interrupted `worktree add` still gets removed
            _git("worktree", "add", "--detach", str(root), commit)
            trees.append(Tree(rev, commit, root))
        yield trees
    finally:
        leftover = False
        for root in made:
            try:
                _git("worktree", "remove", "--force", str(root))
            except SystemExit:
                leftover = True
        shutil.rmtree(parent, ignore_errors=True)
        if leftover:  # forget a worktree whose folder is gone now
            with contextlib.suppress(SystemExit):
                _git("worktree", "prune")

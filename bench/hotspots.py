"""Optional (--profile): sample one gunicorn worker with py-spy during the full-speed run and summarise
where its interpreter time goes (`--gil`: only the thread holding the GIL is sampled, so the shares are
of the Python work the process does, which is what competes with acknowledging).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


def available() -> bool:
    return Path(PY_SPY).exists()


def start(pid: int, seconds: float, raw_path: Path) -> subprocess.Popen:
    args = [PY_SPY, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
            "--format", "raw", "--output", str(raw_path), "--threads", "--nonblocking"] + (["--gil"] if os.environ.get("SPY_GIL") else [])
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise(raw_path: Path, top: int = 45) -> str:
    """Share of samples per function: inclusive (once per stack), then self (the frame that was running)."""
    if not raw_path.exists():
        return f"py-spy wrote nothing to {raw_path.name} (is ptrace allowed here?)\n"
    inclusive, own, total = Counter(), Counter(), 0
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():  # a line py-spy cut short when the process went away
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")[1:]]
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    lines = [f"{total} samples of one gunicorn worker, of the thread holding the GIL", "", "inclusive:", ""]
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "self:", ""]
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines) + "\n"

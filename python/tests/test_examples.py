"""The examples train for a few steps on the CPU from the installed package."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

EXAMPLES = REPO / "examples" / "python"


def run(script: str, *args: str, tmp_path: Path) -> list[float]:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        check=True, capture_output=True, text=True, cwd=tmp_path, timeout=600,
    ).stdout
    losses = [float(x) for x in re.findall(r"loss (\S+)", out)]
    assert losses and all(math.isfinite(x) for x in losses), out
    return losses


def test_moco_v2_trains_and_resumes(small_path: Path, tmp_path: Path) -> None:
    args = ["--arch", "resnet18", "--size", "64", "--batch", "16", "--queue", "256",
            "--threads", "2", "--device", "cpu"]
    assert len(run("moco_v2.py", str(small_path), *args, "--steps", "2", tmp_path=tmp_path)) == 2
    # The checkpoint holds the loader's position: a resumed run continues mid-epoch, at step 3.
    resumed = run("moco_v2.py", str(small_path), *args, "--steps", "3", "--resume", tmp_path=tmp_path)
    assert len(resumed) == 1


def test_dino_multicrop_trains(small_path: Path, tmp_path: Path) -> None:
    args = ["--arch", "resnet18", "--global-size", "64", "--local-size", "32", "--local-views", "2",
            "--batch", "8", "--out-dim", "256", "--threads", "2", "--device", "cpu", "--steps", "2"]
    assert len(run("dino_multicrop.py", str(small_path), *args, tmp_path=tmp_path)) == 2

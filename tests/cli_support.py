"""Running the project's command lines in a subprocess, as a user would (imported by the CLI test files)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_module(module: str, *args: str, check: bool = True, env: dict[str, str] | None = None,
               timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS...` from the repository root; with `check`, a non-zero exit fails the test with
    the tail of its output."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{module} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def smoke_args(cola_archive: Path, tmp_path: Path) -> list[str]:
    """`experiment=smoke` (tiny random BERT, a few batches) with everything written under `tmp_path`."""
    return ["experiment=smoke", f"data.archive={cola_archive}", f"paths.data_dir={tmp_path / 'data'}",
            f"paths.log_dir={tmp_path / 'outputs'}", "data.eval_batch_size=512", "trainer.enable_progress_bar=false",
            "save_model=false"]


def read_summary(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "sweep_summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))

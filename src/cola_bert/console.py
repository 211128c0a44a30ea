"""A clean console for training runs: no library adverts, no escape codes in captured output, no deprecation noise
from dependencies, known user errors as one paragraph instead of a traceback, and exit status 2 for every bad
command line."""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Lightning's info lines that say nothing the run header does not (or nothing at all).
_LIGHTNING_NOISE = (
    "💡 Tip:",  # an advert for Lightning's cloud logger
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "Loading `train_dataloader` to estimate number of stepping batches.",
    "Using bfloat16 Automatic Mixed Precision",  # the header's precision line says it, with the reason
    "Using 16bit Automatic Mixed Precision",
    "Experiment logs directory",  # CSVLogger's warning; cola_bert.loggers.CSVLogger keeps the history instead
)
# Libraries whose deprecation warnings are about their own internals, not about anything a user can change.
_LIBRARIES = r"(pytorch_lightning|lightning_fabric|lightning_utilities|torch|torchmetrics|transformers|hydra|omegaconf)"


def is_terminal(stream=None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", None) and stream.isatty())


class _DropLightningNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.lstrip().startswith(_LIGHTNING_NOISE)


def _is_new_head_only(report: str) -> bool:
    """A transformers load report whose only rows are the freshly initialised classifier head: expected when
    fine-tuning a base model, and said by the run header."""
    rows = [line.split("|") for line in report.splitlines() if "|" in line]
    rows = [[cell.strip() for cell in row] for row in rows[1:]]  # the first is the table header
    return bool(rows) and all(row[1] == "MISSING" and row[0].startswith("classifier.") for row in rows)


class _PlainLoadReport(logging.Filter):
    """transformers' state-dict load report: dropped when it only lists the new classifier head; otherwise kept,
    without its terminal colour codes when the output is not a terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        plain = ANSI.sub("", message)
        if _is_new_head_only(plain):
            return False
        if not is_terminal(sys.stderr):
            record.msg, record.args = plain, None
        return True


_FILTERS = {
    "pytorch_lightning.utilities.rank_zero": _DropLightningNoise(),
    "lightning_fabric.utilities.rank_zero": _DropLightningNoise(),
    "transformers.modeling_utils": _PlainLoadReport(),
}


def quiet_libraries() -> None:
    """Install the filters (idempotent)."""
    for name, filt in _FILTERS.items():
        logger = logging.getLogger(name)
        if filt not in logger.filters:
            logger.addFilter(filt)
    for category in (DeprecationWarning, FutureWarning):
        # e.g. torch's FutureWarning about `isinstance(treespec, LeafSpec)`, raised from Lightning's code.
        warnings.filterwarnings("ignore", category=category, module=_LIBRARIES + r"(\.|$)")
    # Resuming writes into the run's own checkpoint directory: that it is not empty is the point.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def error_paragraph(err: BaseException) -> str:
    """The one paragraph printed for a known user error (the traceback stays behind HYDRA_FULL_ERROR=1)."""
    text = " ".join(str(err).split())
    return f"Error: {text}\n(Set HYDRA_FULL_ERROR=1 to see the traceback.)"


_composed = False


def config_composed() -> None:
    """Called first by each @hydra.main task function: Hydra has composed the command line's config."""
    global _composed
    _composed = True


def run_hydra(main: Callable[[], Any]) -> None:
    """Run a @hydra.main entry point so that a command line Hydra cannot compose (a mistyped key or config group, an
    override that does not parse) exits 2, the status of every other bad input. Hydra exits 1 for it, the status
    these commands keep for failures; its message (what was wrong, the available options) is printed unchanged."""
    try:
        main()
    except SystemExit as err:
        if err.code == 1 and not _composed:
            raise SystemExit(2) from None
        raise

"""Which command-line overrides travel to the SageMaker job, and how.

Every training override (`model=tiny`, `model.optimizer.lr=3e-5`, `+trainer.foo=1`, `~callbacks.progress_bar`,
`task_name='my run'`, `model.optimizer.betas=[0.9,0.98]`, ...) becomes one hyperparameter: the key is the override's
key as typed (with its `+`/`++`/`~` prefix and `@package`), the value is the override's value *text* as typed. The SDK
JSON-encodes it, the toolkit decodes it into `SM_HPS`, and the entry script (cola_bert.sagemaker_entry) rebuilds
`key=value` and lets Hydra parse it there exactly as it would have here — so floats, ints, bools, quoted strings with
spaces, lists, interpolations and group selections mean the same in the container.

Overrides that only make sense on this machine stay here: `sagemaker.*`, `aws.*`, `tune.*`, `hydra.*`, `paths.*`,
`dry_run`, the data locations (`data.archive`, `data.data_dir`, `data.train_file`/`val_file`/`test_file`,
`data.url`, `data.sha256`: the launcher prepares and uploads the channels from them), `ckpt_path` (the container
always resumes from its own checkpoint directory) and `trainer.default_root_dir`. SageMaker's limits on the
hyperparameters (count, lengths) are checked on the job's whole encoded map by `launch.validate.hyperparameters`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from launch.errors import LaunchError

# key == group, key starts with "group." or "group/"
LAUNCHER_GROUPS = ("sagemaker", "aws", "tune", "hydra", "paths")
LAUNCHER_KEYS = frozenset({
    "dry_run", "attach", "attach_dir", "ckpt_path", "trainer.default_root_dir",
    "data.archive", "data.data_dir", "data.train_file", "data.val_file", "data.test_file", "data.url", "data.sha256",
})  # fmt: skip
HPARAMS_SEARCH_REFUSED = (
    "hparams_search=... runs Hydra's local Optuna sweeper; on SageMaker use `python -m launch.tune` (SageMaker "
    "automatic model tuning, ranges in the `tune` config) or a grid with `python -m launch.train -m key=a,b ...` "
    "(one training job per combination)."
)


@dataclass
class SplitOverrides:
    hyperparameters: dict[str, str] = field(default_factory=dict)  # forwarded to the job
    launcher_only: list[str] = field(default_factory=list)  # used here


def refuse(key: str) -> None:
    """LaunchError when `key` (without +/++/~ and @package) belongs to a group that cannot run on SageMaker."""
    if key.split(".", 1)[0] == "hparams_search":
        raise LaunchError(HPARAMS_SEARCH_REFUSED)


def refuse_before_hydra(argv: Sequence[str]) -> None:
    """Refuse what cannot run on SageMaker before Hydra starts: `hparams_search=optuna` switches Hydra into its own
    (local) Optuna sweep, which would otherwise start and fail every trial before anything says why."""
    for arg in argv:
        if not arg.startswith("-") and "=" in arg:
            refuse(arg.split("=", 1)[0].lstrip("+~").split("@", 1)[0])


def is_launcher_only(key: str) -> bool:
    """Whether the override key `key` (with or without its +/++/~ prefix and @package) stays on this machine."""
    key = key.lstrip("+~").split("@", 1)[0]
    return key in LAUNCHER_KEYS or any(key == g or key.startswith((f"{g}.", f"{g}/")) for g in LAUNCHER_GROUPS)


def split_overrides(overrides: Sequence[str]) -> SplitOverrides:
    """Split the command line's overrides (HydraConfig `overrides.task`) into hyperparameters and launcher-only ones.

    A key given twice keeps its last value (as in Hydra). Raises LaunchError for what cannot run on SageMaker.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, result = OverridesParser.create(), SplitOverrides()
    for line in overrides:
        try:
            override = parser.parse_override(line)
        except Exception as err:  # OverrideParseException; Hydra itself rejects these first
            raise LaunchError(f"Cannot parse the override {line!r}: {err}") from err
        bare = override.key_or_group
        refuse(bare)
        if is_launcher_only(bare):
            result.launcher_only.append(line)
            continue
        if override.is_sweep_override():
            raise LaunchError(
                f"{line} is a sweep: run it with -m (python -m launch.train -m {line} ...), one job per value."
            )
        key = override.get_key_element()
        if key.startswith("sagemaker_") or bare.startswith("_"):
            raise LaunchError(f"{line}: keys starting with `sagemaker_` or `_` are reserved by SageMaker.")
        value = (line.split("=", 1)[1] if "=" in line else "").strip()
        # Same key again (e.g. `seed=1 seed=2`): the last one wins, as in Hydra; re-insert to keep the order.
        result.hyperparameters.pop(key, None)
        result.hyperparameters[key] = value
    return result


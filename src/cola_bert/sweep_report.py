"""Pictures of a sweep, drawn from the rows of its `sweep_summary.csv`.

`sweep_report.png`: the optimized metric against each swept parameter (numbers as a scatter, on a log axis when the
search space says so or the values span more than a decade; anything else as a strip per value), best job marked.
For an Optuna sweep also `optuna_history.png` (each trial's value and the best so far) and `optuna_importance.png`
(parameter importances of a study rebuilt from the rows with the sweeper's own distributions).

`SweepSummary` (cola_bert.sweep) redraws them after every job. After a sweep, or for one still running:
    python -m cola_bert.sweep_report outputs/train/multiruns/<date_time>
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from omegaconf import DictConfig, OmegaConf

from cola_bert.sweep import SUMMARY_NAME, sweep_direction

REPORT_NAME = "sweep_report.png"
HISTORY_NAME = "optuna_history.png"
IMPORTANCE_NAME = "optuna_importance.png"
BEST_STYLE = {"marker": "*", "s": 220, "color": "tab:red", "edgecolor": "black", "zorder": 3}


@dataclass
class Job:
    job: int
    status: str
    value: float | None
    params: dict[str, Any] = field(default_factory=dict)


def parse_overrides(text: str) -> dict[str, Any]:
    """`a.b=1e-3 data.batch_size=16 trainer=cpu` → {"a.b": 0.001, "data.batch_size": 16, "trainer": "cpu"}."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra.errors import HydraException

    parser = OverridesParser.create()
    params: dict[str, Any] = {}
    for token in text.split():
        try:
            override = parser.parse_override(token)
        except HydraException:  # e.g. a quoted value with a space, split apart by the CSV's one-line form
            key, _, value = token.partition("=")
            params[key.lstrip("+~")] = value
            continue
        value = override.value()
        params[override.get_key_element().lstrip("+~")] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return params


def read_jobs(summary_csv: Path) -> tuple[list[Job], str]:
    """The summary's rows as jobs (value None unless completed with a number) and the metric's name."""
    jobs, metric = [], ""
    with open(summary_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            value = float(row["value"]) if row.get("status") == "completed" and row.get("value") else None
            if value is not None and math.isnan(value):
                value = None
            jobs.append(Job(int(row["job"]), row["status"], value, parse_overrides(row.get("overrides", ""))))
            metric = metric or row.get("metric", "")
    return jobs, metric or "value"


def optuna_space(sweeper: Mapping[str, Any] | None, overrides: Sequence[str] = ()) -> dict[str, str] | None:
    """The search space of an Optuna sweeper config (`hydra.sweeper.params`); None for any other sweeper.

    `overrides` (the sweep's command line) are combined as the sweeper does: `key=interval(...)`/`choice(...)`
    replaces that key's range, a plain `key=value` takes the key out of the search.
    """
    if not sweeper or "optuna" not in str(sweeper.get("_target_", "")).lower():
        return None
    params = sweeper.get("params") or {}
    if isinstance(params, DictConfig):
        params = OmegaConf.to_container(params, resolve=True)
    space = {str(k): str(v) for k, v in params.items()}
    if overrides:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create()
        for token in overrides:
            override = parser.parse_override(token)
            key = override.get_key_element()
            if override.is_sweep_override():
                space[key] = token.partition("=")[2]
            else:
                space.pop(key, None)
    return space or None


def optuna_distributions(params_space: Mapping[str, str]) -> dict[str, Any]:
    """The Optuna distributions the Hydra Optuna sweeper builds from the same `params` (its own parser)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    distributions, _fixed = create_params_from_overrides([f"{k}={v}" for k, v in params_space.items()])
    return distributions


def swept_params(jobs: Sequence[Job], params_space: Mapping[str, str] | None) -> list[str]:
    """The search space's parameters when given, else every override whose value differs between jobs."""
    seen: dict[str, set[str]] = {}
    for job in jobs:
        for key, value in job.params.items():
            seen.setdefault(key, set()).add(repr(value))
    if params_space:
        return [key for key in params_space if key in seen]
    return [key for key, values in seen.items() if len(values) > 1 or any(key not in j.params for j in jobs)]


def best_job(jobs: Sequence[Job], direction: str) -> Job | None:
    done = [j for j in jobs if j.value is not None]
    if not done:
        return None
    pick = max if direction == "maximize" else min
    return pick(done, key=lambda j: (j.value, -j.job) if direction == "maximize" else (j.value, j.job))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def _param_panel(ax, key: str, jobs: Sequence[Job], best: Job | None, distribution: Any, metric: str) -> None:
    kind = type(distribution).__name__  # optuna.distributions.*Distribution, or NoneType for a grid sweep
    done = [j for j in jobs if j.value is not None and key in j.params]
    values = [j.params[key] for j in done]
    categorical = kind == "CategoricalDistribution" or not all(_is_number(v) for v in values)
    if categorical:
        if kind == "CategoricalDistribution":
            categories = list(distribution.choices)
        else:
            categories = sorted({v for v in values}, key=lambda v: (not _is_number(v), v if _is_number(v) else str(v)))
        index = {repr(c): i for i, c in enumerate(categories)}
        # a small deterministic spread so equal values stay visible side by side
        xs = [index[repr(j.params[key])] + ((j.job * 0.618) % 1 - 0.5) * 0.3 for j in done]
        ax.set_xticks(range(len(categories)), [str(c) for c in categories])
        ax.set_xlim(-0.6, len(categories) - 0.4)
    else:
        xs = [float(v) for v in values]
        distinct = sorted(set(xs))
        grid = distribution is None and 1 < len(distinct) <= 10  # a grid sweep: its values become the ticks
        if grid:  # e.g. lr=1e-5,1e-4,1e-3 is spaced by decades
            logged = distinct[0] > 0 and distinct[-1] / distinct[0] >= 100
        else:
            logged = kind in ("LogUniformDistribution", "IntLogUniformDistribution")
        if hasattr(distribution, "low") and hasattr(distribution, "high"):  # the whole search interval
            low, high = float(distribution.low), float(distribution.high)
        else:
            low, high = (distinct[0], distinct[-1]) if distinct else (0.0, 1.0)
        if logged:
            ax.set_xscale("log")
            subs = (1.0, 2.0, 5.0) if high / low <= 100 else (1.0,)
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        if grid:
            ax.set_xticks(distinct, [f"{x:g}" for x in distinct])
            ax.margins(x=0.08)
        elif distribution is not None and high > low:
            pad = (high / low) ** 0.03 if logged else (high - low) * 0.03
            ax.set_xlim(low / pad, high * pad) if logged else ax.set_xlim(low - pad, high + pad)
    ax.scatter(xs, [j.value for j in done], color="tab:blue", alpha=0.75, label="job")
    if best is not None and best in done:
        bx = xs[done.index(best)]
        ax.scatter([bx], [best.value], label=f"best (job {best.job})", **BEST_STYLE)
    ax.set(xlabel=key, ylabel=metric)
    ax.grid(alpha=0.3)


def report_figure(jobs: Sequence[Job], metric: str, params_space: Mapping[str, str] | None, direction: str) -> Figure:
    """One panel per swept parameter: the metric of each completed job against its value, the best job starred."""
    distributions = optuna_distributions(params_space) if params_space else {}
    keys = swept_params(jobs, params_space)
    best = best_job(jobs, direction)
    done = [j for j in jobs if j.value is not None]
    failed = len(jobs) - len(done)
    ncols = min(3, max(1, len(keys)))
    nrows = max(1, math.ceil(len(keys) / ncols))
    fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows + 0.9))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    if not keys:  # one job, or jobs that differ in nothing: the value per job
        ax = axes[0]
        ax.scatter([j.job for j in done], [j.value for j in done], color="tab:blue")
        if best is not None:
            ax.scatter([best.job], [best.value], label=f"best (job {best.job})", **BEST_STYLE)
        ax.set(xlabel="job", ylabel=metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax, key in zip(axes, keys):
        _param_panel(ax, key, jobs, best, distributions.get(key), metric)
    for ax in axes[max(1, len(keys)):]:
        ax.set_visible(False)
    if best is not None:
        axes[0].legend(fontsize="small", loc="best")
    title = f"{metric} ({direction}) over {_count(len(done), 'completed job')}"
    if failed:
        title += f", {failed} failed"
    if best is not None:
        title += f"\nbest: job {best.job}, {metric} = {best.value:.4f}"
    elif not done:
        title += " (no completed job yet)"
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def rebuild_study(jobs: Sequence[Job], params_space: Mapping[str, str], direction: str):
    """An in-memory Optuna study with one COMPLETE trial per completed job (its params parsed from the overrides)."""
    import optuna

    distributions = optuna_distributions(params_space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction)
    outside = []  # e.g. a sweep whose ranges were changed on its command line, redrawn from its saved config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # create_trial/add_trial in 2.x
        for job in sorted(jobs, key=lambda j: j.job):
            if job.value is None:
                continue
            try:
                params = {k: job.params[k] for k in distributions}
                trial = optuna.trial.create_trial(params=params, distributions=distributions, value=job.value,
                                                  user_attrs={"job": job.job})
            except (KeyError, ValueError):
                outside.append(job.job)
                continue
            study.add_trial(trial)
    study.set_user_attr("jobs_outside_space", outside)
    return study


def _outside_note(study) -> str:
    outside = study.user_attrs.get("jobs_outside_space") or []
    return f"\n(jobs {', '.join(map(str, outside))} outside the search space: left out)" if outside else ""


def history_figure(study, metric: str) -> Figure:
    """Each trial's value by job number, the best value so far, the best trial starred."""
    trials = study.trials
    jobs = [t.user_attrs["job"] for t in trials]
    values = [t.value for t in trials]
    pick = max if study.direction.name == "MAXIMIZE" else min
    running = [pick(values[: i + 1]) for i in range(len(values))]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.scatter(jobs, values, color="tab:blue", label="trial")
    ax.step(jobs, running, where="post", color="tab:orange", label="best so far")
    if trials:
        best = study.best_trial
        ax.scatter([best.user_attrs["job"]], [best.value], label=f"best (job {best.user_attrs['job']})", **BEST_STYLE)
        ax.legend(fontsize="small")
    ax.set(xlabel="trial (job number)", ylabel=metric,
           title=f"Optuna optimisation history ({study.direction.name.lower()}, {_count(len(trials), 'trial')})"
           + _outside_note(study))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def param_importances(study) -> dict[str, float]:
    """Mean-decrease-impurity importances (random forest, fixed seed). Optuna 2.10's default fANOVA evaluator
    fails with scikit-learn >= 1.4 (tree value arrays changed shape), so it is not used."""
    import optuna

    evaluator = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))


def importance_figure(study) -> Figure:
    """A bar per parameter of `param_importances`, or a note saying why there is nothing to rank yet."""
    n_params = len(study.trials[0].params) if study.trials else 0
    fig = Figure(figsize=(7, 0.5 * max(3, n_params) + 1.2))
    ax = fig.subplots()
    values = {t.value for t in study.trials}
    if len(study.trials) < 2 or len(values) < 2:
        ax.text(0.5, 0.5, f"Parameter importance needs at least 2 completed trials with different values\n"
                f"(this study has {len(study.trials)} completed, {len(values)} distinct value(s)).",
                ha="center", va="center", wrap=True)
        ax.set_axis_off()
    else:
        importances = param_importances(study)
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names], color="tab:blue")
        for y, name in enumerate(names):
            ax.text(importances[name], y, f" {importances[name]:.2f}", va="center")
        ax.set(xlabel="importance (mean decrease in impurity, sums to 1)", xlim=(0, max(importances.values()) * 1.25))
        ax.grid(alpha=0.3, axis="x")
    ax.set_title(f"Optuna parameter importance ({_count(len(study.trials), 'trial')})" + _outside_note(study))
    fig.tight_layout()
    return fig


def write_sweep_report(summary_csv: Path | str, out_dir: Path | str, params_space: Mapping[str, str] | None = None,
                       direction: str = "maximize") -> list[Path]:
    """Draw `sweep_report.png` (+ `optuna_history.png`, `optuna_importance.png` when `params_space`, the Optuna
    sweeper's `params`, is given) into `out_dir` from `summary_csv`. Returns the files written."""
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction={direction!r}: use 'maximize' or 'minimize'")
    out_dir = Path(out_dir)
    jobs, metric = read_jobs(Path(summary_csv))
    written = [_save(report_figure(jobs, metric, params_space, direction), out_dir / REPORT_NAME)]
    if params_space:
        study = rebuild_study(jobs, params_space, direction)
        written.append(_save(history_figure(study, metric), out_dir / HISTORY_NAME))
        written.append(_save(importance_figure(study), out_dir / IMPORTANCE_NAME))
    return written


def sweep_config(sweep_dir: Path) -> DictConfig | None:
    """The config of a sweep as its jobs saw it (hydra node included), from the first job's `.hydra/`."""
    for hydra_yaml in sorted(sweep_dir.glob("*/.hydra/hydra.yaml"), key=lambda p: p.parent.parent.name):
        cfg = OmegaConf.load(hydra_yaml.with_name("config.yaml"))
        OmegaConf.set_struct(cfg, False)
        cfg.hydra = OmegaConf.load(hydra_yaml).hydra
        return cfg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cola_bert.sweep_report",
        description="Redraw sweep_report.png (and the Optuna history/importance plots) of a sweep directory.",
    )
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory holding sweep_summary.csv")
    parser.add_argument("--out", type=Path, help="where to write the PNGs (default: the sweep directory)")
    parser.add_argument("--direction", choices=["maximize", "minimize"],
                        help="default: the sweep's own (hydra.sweeper.direction or optimized_metric_mode)")
    args = parser.parse_args(argv)
    summary = args.sweep_dir / SUMMARY_NAME
    if not summary.is_file():
        print(f"error: {summary} does not exist. Give the directory of a `python -m cola_bert.train -m ...` sweep "
              "(outputs/train/multiruns/<date_time>); its sweep_summary.csv is written after the first job ends.",
              file=sys.stderr)
        return 2
    cfg = sweep_config(args.sweep_dir)
    space = optuna_space(cfg.hydra.get("sweeper")) if cfg is not None else None
    direction = args.direction or (sweep_direction(cfg) if cfg is not None else "maximize")
    for path in write_sweep_report(summary, args.out or args.sweep_dir, space, direction):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sweeps: sweep_summary.csv ranks jobs in the configured direction, sweep_report.png is drawn from its rows.

The callback tests drive `SweepSummary` with real composed configs and Hydra `JobReturn`s (exact values, a later
job wins in both directions); the end-to-end tests run real `python -m cola_bert.train -m` grid and Optuna sweeps
on the tiny model, optimising `val/loss` (which, unlike the tiny model's MCC, differs between jobs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_support import read_summary, run_module, smoke_args
from hydra import compose, initialize_config_dir
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import open_dict

from cola_bert.config import conf_dir
from cola_bert.sweep import SweepSummary, sweep_direction
from cola_bert.sweep_report import (
    history_figure,
    main,
    optuna_space,
    param_importances,
    parse_overrides,
    read_jobs,
    rebuild_study,
    report_figure,
    sweep_config,
    write_sweep_report,
)

# The lead's study space (conf/hparams_search/optuna.yaml) as the sweeper reads it.
SPACE = {
    "model.optimizer.lr": "tag(log, interval(2e-5, 3e-4))",
    "model.warmup_ratio": "interval(0.0, 0.2)",
    "data.batch_size": "choice(16, 32, 64)",
    "trainer.max_epochs": "choice(2, 3, 4, 5)",
}


def compose_job(sweep_dir: Path, num: int, task_overrides: list[str], *extra: str):
    """The config a multirun job's callbacks receive (hydra node included)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir()), job_name="test"):
        cfg = compose(config_name="train", overrides=[*extra, *task_overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.job.num = num
        cfg.hydra.sweep.dir = str(sweep_dir)
        cfg.hydra.runtime.output_dir = str(sweep_dir / str(num))
        cfg.hydra.overrides.task = task_overrides
    return cfg


def finish_job(callback: SweepSummary, sweep_dir: Path, num: int, lr: str, value: float | None, *extra: str) -> None:
    cfg = compose_job(sweep_dir, num, [f"model.optimizer.lr={lr}"], *extra)
    if value is None:
        status, ret = JobStatus.FAILED, RuntimeError("CUDA out of memory")
    else:
        status, ret = JobStatus.COMPLETED, value
        run_dir = sweep_dir / str(num)
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps({"val/mcc": value, "val/accuracy": 0.7}))
    callback.on_job_end(cfg, JobReturn(overrides=[], cfg=cfg, hydra_cfg=cfg, working_dir=str(sweep_dir),
                                       task_name="train", status=status, _return_value=ret))


# ------------------------------------------------------------------------------------------------------------------
# The summary's order (callback level: exact values)
# ------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "expected_jobs"), [("max", ["1", "0", "2", "3"]), ("min", ["2", "0", "1", "3"])])
def test_summary_ranks_by_the_configured_direction_and_a_later_job_can_win(tmp_path, mode, expected_jobs):
    sweep_dir = tmp_path / "sweep"
    callback = SweepSummary(report=False)
    callback.on_multirun_start(compose_job(sweep_dir, 0, [], f"optimized_metric_mode={mode}"))
    for num, (lr, value) in enumerate([("1e-4", 0.30), ("3e-4", 0.55), ("1e-3", 0.10), ("3e-3", None)]):
        finish_job(callback, sweep_dir, num, lr, value, f"optimized_metric_mode={mode}")
    rows = read_summary(sweep_dir)
    assert [r["job"] for r in rows] == expected_jobs
    assert rows[-1]["status"] == "failed" and "CUDA out of memory" in rows[-1]["error"]
    assert not (sweep_dir / "sweep_report.png").exists()  # report=False


def test_the_direction_follows_optimized_metric_mode_unless_the_optuna_sweeper_says_otherwise(tmp_path):
    grid = compose_job(tmp_path, 0, [], "optimized_metric_mode=min")
    assert sweep_direction(grid) == "minimize"
    assert grid.callbacks.model_checkpoint.mode == "min"
    optuna = compose_job(tmp_path, 0, [], "hparams_search=optuna", "optimized_metric_mode=min")
    assert optuna.hydra.sweeper.direction == "minimize" and sweep_direction(optuna) == "minimize"
    assert sweep_direction(compose_job(tmp_path, 0, [], "hparams_search=optuna")) == "maximize"
    explicit = compose_job(tmp_path, 0, [], "hparams_search=optuna", "optimized_metric_mode=min",
                           "hydra.sweeper.direction=maximize")
    assert sweep_direction(explicit) == "maximize"  # what the study optimised is what the table ranks


def test_a_wrong_mode_stops_the_sweep_before_its_first_job(tmp_path):
    with pytest.raises(ValueError, match="optimized_metric_mode=best is not a direction. Use optimized_metric_mode=max"):
        SweepSummary().on_multirun_start(compose_job(tmp_path, 0, [], "optimized_metric_mode=best"))


# ------------------------------------------------------------------------------------------------------------------
# The pictures (drawn from the summary's rows)
# ------------------------------------------------------------------------------------------------------------------

def points(ax) -> list[tuple[float, float]]:
    return [tuple(map(float, p)) for c in ax.collections for p in c.get_offsets()]


def test_report_is_redrawn_from_the_rows_after_every_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    callback = SweepSummary()
    callback.on_multirun_start(compose_job(sweep_dir, 0, []))
    finish_job(callback, sweep_dir, 0, "1e-4", 0.30)
    first = (sweep_dir / "sweep_report.png").read_bytes()
    assert first.startswith(b"\x89PNG")
    finish_job(callback, sweep_dir, 1, "1e-3", 0.55)
    assert (sweep_dir / "sweep_report.png").read_bytes() != first

    jobs, metric = read_jobs(sweep_dir / "sweep_summary.csv")
    fig = report_figure(jobs, metric, None, "maximize")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "model.optimizer.lr" and metric == "val/mcc"
    jobs_points, best_points = ax.collections[0].get_offsets(), ax.collections[1].get_offsets()
    assert sorted(map(tuple, jobs_points.tolist())) == [(1e-4, 0.30), (1e-3, 0.55)]
    assert best_points.tolist() == [[1e-3, 0.55]]
    assert "best: job 1" in fig._suptitle.get_text()


def test_grid_report_marks_the_best_job_in_either_direction(tmp_path):
    summary = tmp_path / "sweep_summary.csv"
    summary.write_text(
        "job,status,overrides,metric,value,val/mcc,val/accuracy,run_dir,error\n"
        "0,completed,model.optimizer.lr=1e-05 data.batch_size=16 trainer=cpu,val/loss,0.69,,,r0,\n"
        "1,completed,model.optimizer.lr=0.001 data.batch_size=32 trainer=cpu,val/loss,0.61,,,r1,\n"
        "2,completed,model.optimizer.lr=0.1 data.batch_size=16 trainer=cpu,val/loss,0.75,,,r2,\n"
        "3,failed,model.optimizer.lr=0.1 data.batch_size=32 trainer=cpu,val/loss,,,,r3,boom\n"
    )
    jobs, metric = read_jobs(summary)
    assert jobs[0].params == {"model.optimizer.lr": 1e-05, "data.batch_size": 16, "trainer": "cpu"}
    for direction, best in (("minimize", (1e-3, 0.61)), ("maximize", (0.1, 0.75))):
        fig = report_figure(jobs, metric, None, direction)
        lr_ax, batch_ax = fig.axes[:2]  # `trainer` is the same in every job: not a swept parameter
        assert [lr_ax.get_xlabel(), batch_ax.get_xlabel()] == ["model.optimizer.lr", "data.batch_size"]
        assert lr_ax.get_xscale() == "log"  # 1e-5 .. 1e-1 is a decade grid
        assert points(lr_ax)[:3] == [(1e-05, 0.69), (1e-3, 0.61), (0.1, 0.75)] and points(lr_ax)[3] == best
        assert "3 completed jobs, 1 failed" in fig._suptitle.get_text()
    written = write_sweep_report(summary, tmp_path / "out", direction="minimize")
    assert [p.name for p in written] == ["sweep_report.png"]  # no Optuna plots for a grid


def optuna_rows(tmp_path: Path) -> Path:
    rows = [  # job, lr, warmup, batch, epochs, value (job 4 failed)
        (0, 5e-5, 0.10, 16, 2, 0.31), (1, 2e-4, 0.05, 32, 3, 0.12), (2, 3e-5, 0.15, 64, 4, 0.36),
        (3, 9e-5, 0.02, 16, 5, 0.41), (4, 1e-4, 0.08, 32, 2, None), (5, 7e-5, 0.12, 64, 3, 0.38),
    ]
    lines = ["job,status,overrides,metric,value,val/mcc,val/accuracy,run_dir,error"]
    for job, lr, warmup, batch, epochs, value in rows:
        overrides = (f"model.optimizer.lr={lr} model.warmup_ratio={warmup} data.batch_size={batch} "
                     f"trainer.max_epochs={epochs} hparams_search=optuna")
        status = "completed" if value is not None else "failed"
        lines.append(f"{job},{status},{overrides},val/mcc,{'' if value is None else value},,,r{job},")
    (tmp_path / "sweep_summary.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "sweep_summary.csv"


def test_optuna_report_rebuilds_the_study_from_the_rows(tmp_path):
    summary = optuna_rows(tmp_path)
    jobs, metric = read_jobs(summary)
    study = rebuild_study(jobs, SPACE, "maximize")
    assert [t.user_attrs["job"] for t in study.trials] == [0, 1, 2, 3, 5]
    assert study.best_value == 0.41 and study.best_params == {
        "model.optimizer.lr": 9e-5, "model.warmup_ratio": 0.02, "data.batch_size": 16, "trainer.max_epochs": 5}
    assert rebuild_study(jobs, SPACE, "minimize").best_value == 0.12
    importances = param_importances(study)
    assert set(importances) == set(SPACE) and sum(importances.values()) == pytest.approx(1.0)

    history = history_figure(study, metric).axes[0]
    assert points(history)[:5] == [(0, 0.31), (1, 0.12), (2, 0.36), (3, 0.41), (5, 0.38)]
    assert points(history)[5] == (3, 0.41)  # the best trial, starred
    best_so_far = history.lines[0].get_ydata().tolist()
    assert best_so_far == [0.31, 0.31, 0.36, 0.41, 0.41]

    report = report_figure(jobs, metric, SPACE, "maximize")
    by_name = {ax.get_xlabel(): ax for ax in report.axes if ax.get_visible()}
    assert list(by_name) == list(SPACE)
    assert by_name["model.optimizer.lr"].get_xscale() == "log"  # tag(log, ...) in the space
    assert [t.get_text() for t in by_name["data.batch_size"].get_xticklabels()] == ["16", "32", "64"]  # choice()

    names = [p.name for p in write_sweep_report(summary, tmp_path / "out", SPACE, "maximize")]
    assert names == ["sweep_report.png", "optuna_history.png", "optuna_importance.png"]


def test_optuna_space_is_the_config_combined_with_the_sweeps_command_line(tmp_path):
    cfg = compose_job(tmp_path, 0, [], "hparams_search=optuna")
    with open_dict(cfg):  # as typed: a narrower lr range, dropout fixed (out of the search), a new choice
        cfg.hydra.overrides.task = ["hparams_search=optuna", "model.optimizer.lr=tag(log, interval(1e-6, 1e-5))",
                                    "model.dropout=0.1", "model.warmup_ratio=0.0,0.1"]
    callback = SweepSummary()
    callback.on_multirun_start(cfg)
    space = callback.params_space
    assert space["model.optimizer.lr"] == "tag(log, interval(1e-6, 1e-5))" and "model.dropout" not in space
    assert space["model.warmup_ratio"] == "0.0,0.1" and space["data.batch_size"] == "choice(16, 32, 64)"
    assert optuna_space(compose_job(tmp_path, 0, []).hydra.sweeper) is None  # a grid sweep has no Optuna space

    # A row outside the space it is redrawn with (e.g. the saved config without the command line) is named.
    summary = optuna_rows(tmp_path)
    study = rebuild_study(read_jobs(summary)[0], {**SPACE, "model.optimizer.lr": "interval(1e-5, 6e-5)"}, "maximize")
    assert study.user_attrs["jobs_outside_space"] == [1, 3, 5] and len(study.trials) == 2


def test_report_refuses_an_unknown_direction(tmp_path):
    with pytest.raises(ValueError, match="direction='up'"):
        write_sweep_report(optuna_rows(tmp_path), tmp_path, direction="up")


def test_overrides_are_parsed_with_hydras_grammar():
    assert parse_overrides("model.optimizer.lr=5.5e-05 data.batch_size=16 save_model=false +x.y=a logger=[csv,mlflow]"
                           ) == {"model.optimizer.lr": 5.5e-05, "data.batch_size": 16, "save_model": False,
                                 "x.y": "a", "logger": "['csv', 'mlflow']"}
    assert optuna_space({"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": {}}) is None


def test_report_cli_explains_a_directory_without_a_summary(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "sweep_summary.csv does not exist" in err and "multiruns" in err


# ------------------------------------------------------------------------------------------------------------------
# End to end: real sweeps on the tiny model
# ------------------------------------------------------------------------------------------------------------------

# Seed 42, one smoke epoch: val/loss is 0.681 at lr 1e-3, 0.698 at 1e-5 and 0.637 at 3e-2, so the second job of
# each grid is the best one in the direction asked for.
@pytest.mark.timeout(900)  # several real training jobs in one test
@pytest.mark.parametrize(("mode", "lrs"), [("max", "1e-3,1e-5"), ("min", "1e-3,3e-2")])
def test_grid_sweep_ranks_by_the_configured_direction(cola_archive, tmp_path, mode, lrs):
    sweep_dir = tmp_path / "sweep"
    run_module("cola_bert.train", "-m", *smoke_args(cola_archive, tmp_path), f"hydra.sweep.dir={sweep_dir}",
               "optimized_metric=val/loss", f"optimized_metric_mode={mode}", f"model.optimizer.lr={lrs}")
    rows = read_summary(sweep_dir)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert rows[0]["job"] == "1", "the later job has the better val/loss in this direction"
    values = [float(r["value"]) for r in rows]
    assert values == sorted(values, reverse=(mode == "max")) and values[0] != values[1]
    for row in rows:
        metrics = json.loads(Path(row["run_dir"], "metrics.json").read_text())
        assert float(row["value"]) == pytest.approx(metrics["val/loss"]) and row["metric"] == "val/loss"
        assert yaml.safe_load(Path(row["run_dir"], "config.yaml").read_text())["callbacks"]["model_checkpoint"][
            "mode"] == mode
    assert (sweep_dir / "sweep_report.png").read_bytes().startswith(b"\x89PNG")

    # The report CLI reads the direction back from the sweep's own config.
    (sweep_dir / "sweep_report.png").unlink()
    assert sweep_direction(sweep_config(sweep_dir)) == {"max": "maximize", "min": "minimize"}[mode]
    assert main([str(sweep_dir)]) == 0 and (sweep_dir / "sweep_report.png").is_file()


@pytest.mark.timeout(900)  # several real training jobs in one test
def test_a_failing_sweep_job_is_recorded_not_lost(cola_archive, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_module("cola_bert.train", "-m", *smoke_args(cola_archive, tmp_path), f"hydra.sweep.dir={sweep_dir}",
                      "data.max_length=1,16", check=False)
    assert proc.returncode != 0
    rows = read_summary(sweep_dir)
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert "data.max_length=1" in rows[1]["overrides"] and "max_length=1 must be at least 2" in rows[1]["error"]


@pytest.mark.timeout(900)  # several real training jobs in one test
def test_optuna_study_best_trial_is_the_summarys_best_row(cola_archive, tmp_path):
    sweep_dir = tmp_path / "optuna"
    proc = run_module("cola_bert.train", "hparams_search=optuna", *smoke_args(cola_archive, tmp_path),
                      f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.n_trials=4",
                      "hydra.sweeper.sampler.n_startup_trials=2",  # trials 3 and 4 come from TPE, not at random
                      "optimized_metric=val/loss", "optimized_metric_mode=min")
    assert "Directions: ['minimize']" in proc.stdout + proc.stderr
    rows = read_summary(sweep_dir)
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows)
    values = [float(r["value"]) for r in rows]
    assert len(set(values)) == 4, "the objective must vary between trials for this test to mean anything"
    assert values == sorted(values)

    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    best = parse_overrides(rows[0]["overrides"])
    assert results["best_value"] == pytest.approx(values[0], rel=1e-12)
    assert results["best_params"] == {key: best[key] for key in results["best_params"]}
    space = optuna_space(sweep_config(sweep_dir).hydra.sweeper)
    assert set(results["best_params"]) == set(space)
    for name in ("sweep_report.png", "optuna_history.png", "optuna_importance.png"):
        assert (sweep_dir / name).read_bytes().startswith(b"\x89PNG")

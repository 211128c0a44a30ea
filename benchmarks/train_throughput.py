"""Training throughput of cola-bert vs a plain Hugging Face `Trainer`, and GLUE-dev MCC of full runs.

Same model (all-MiniLM-L6-v2), data (CoLA in_domain_train, max_length 128, dynamic padding), batch size 32 and
learning rate; each configuration trains for `--steps` optimizer steps in a fresh subprocess, and the rounds are
interleaved so that background load hits every configuration alike. `--full` adds complete training runs that
report GLUE-dev MCC. Results go to stdout and (with --write) into docs/benchmarks.md.

    python benchmarks/train_throughput.py --steps 120 --rounds 3 --full --write
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from markdown_report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPO / "data" / "cola_public_1.1.zip"
BATCH_SIZE = 32
HF_LR = 5e-5


# --- the Hugging Face Trainer baseline (run in a subprocess: `--hf-trainer ...`) --------------------------------


def hf_trainer_run(archive: str, steps: int, epochs: float, bf16: bool, out: str) -> dict:
    """Plain `Trainer` as in run_glue.py: tokenizer + DataCollatorWithPadding, random batches by default."""
    import numpy as np
    import torch
    from sklearn.metrics import matthews_corrcoef
    from transformers import (
        AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    from cola_bert.archive import ensure_cola
    from cola_bert.backbone import minilm_path
    from cola_bert.data import cola_splits

    hf_logging.set_verbosity_error()
    torch.manual_seed(42)
    splits = cola_splits(ensure_cola(Path(out) / "data", "", _sha256(), archive), "glue", 0.25, 42)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())

    class Split(torch.utils.data.Dataset):
        def __init__(self, examples):
            self.enc = tokenizer([e.sentence for e in examples], truncation=True, max_length=128)
            self.labels = [e.label for e in examples]

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {"input_ids": self.enc["input_ids"][i], "attention_mask": self.enc["attention_mask"][i],
                    "token_type_ids": self.enc["token_type_ids"][i], "labels": self.labels[i]}

    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=BATCH_SIZE, per_device_eval_batch_size=128,
        learning_rate=HF_LR, max_steps=steps if steps else -1, num_train_epochs=epochs, bf16=bf16, use_cpu=True,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to=[], seed=42,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Split(splits["train"]), eval_dataset=Split(splits["val"]),
                      data_collator=DataCollatorWithPadding(tokenizer))
    result = {"samples_per_second": trainer.train().metrics["train_samples_per_second"]}
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


def run_hf(archive: str, steps: int, epochs: float, bf16: bool, tmp: Path) -> dict:
    out = tempfile.mkdtemp(dir=tmp)
    _run([sys.executable, __file__, "--hf-trainer", "--archive", archive, "--steps", str(steps),
          "--epochs", str(epochs), "--out", out] + (["--bf16"] if bf16 else []))
    return json.loads(Path(out, "result.json").read_text())


def run_cola_bert(archive: str, steps: int, trainer: str, tmp: Path, extra: list[str] = ()) -> dict:
    run_dir = Path(tempfile.mkdtemp(dir=tmp))
    limits = [f"trainer.max_steps={steps}", "callbacks=none", "logger=none", "save_model=false"] if steps else []
    _run([sys.executable, "-m", "cola_bert.train", f"trainer={trainer}", f"data.archive={archive}",
          f"paths.data_dir={tmp / 'data'}", f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false",
          f"data.batch_size={BATCH_SIZE}", *limits, *extra])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"samples_per_second": metrics["train_samples_per_second"], "val_mcc": metrics.get("val/mcc"),
            "best_epoch": metrics.get("best_epoch"), "epochs": metrics.get("epochs_trained"),
            "history": [round(row.get("val/mcc", float("nan")), 4) for row in metrics["history"]]}


THROUGHPUT_CONFIGS = {
    "HF Trainer, fp32 (baseline)": lambda a, s, t: run_hf(a, s, 0, False, t),
    "HF Trainer, bf16": lambda a, s, t: run_hf(a, s, 0, True, t),
    "cola-bert trainer=cpu (fp32)": lambda a, s, t: run_cola_bert(a, s, "cpu", t, [f"model.optimizer.lr={HF_LR}"]),
    "cola-bert trainer=cpu_bf16": lambda a, s, t: run_cola_bert(a, s, "cpu_bf16", t, [f"model.optimizer.lr={HF_LR}"]),
}


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
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps per throughput measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (median reported)")
    parser.add_argument("--full", action="store_true", help="also full runs: HF Trainer 3 epochs, cola-bert defaults")
    parser.add_argument("--write", action="store_true", help="write the tables into docs/benchmarks.md")
    parser.add_argument("--hf-trainer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=float, default=3.0, help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.hf_trainer:
        result = hf_trainer_run(args.archive, args.steps, args.epochs, args.bf16, args.out)
        Path(args.out, "result.json").write_text(json.dumps(result))
        return

    started = dt.datetime.now(dt.timezone.utc)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        samples: dict[str, list[float]] = {name: [] for name in THROUGHPUT_CONFIGS}
        for round_no in range(args.rounds):
            for name, run in THROUGHPUT_CONFIGS.items():
                samples[name].append(run(args.archive, args.steps, tmp)["samples_per_second"])
                print(f"round {round_no + 1}: {name}: {samples[name][-1]:.1f} samples/s", flush=True)
        base = statistics.median(samples["HF Trainer, fp32 (baseline)"])
        rows = [(name, statistics.median(v), statistics.median(v) / base, v) for name, v in samples.items()]

        full_rows = []
        if args.full:
            hf = run_hf(args.archive, 0, 3, False, tmp)
            full_rows.append(("HF Trainer fp32, lr 5e-5, 3 epochs", hf))
            print(f"full: HF Trainer: {hf}", flush=True)
            for trainer in ("cpu", "cpu_bf16"):
                result = run_cola_bert(args.archive, 0, trainer, tmp)
                full_rows.append((f"cola-bert defaults, trainer={trainer}", result))
                print(f"full: cola-bert trainer={trainer}: {result}", flush=True)

    lines = [
        "## Training throughput and accuracy (`benchmarks/train_throughput.py`)",
        "",
        f"- Machine: {machine()}",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- Command: `python benchmarks/train_throughput.py {' '.join(sys.argv[1:])}`",
        f"- Throughput: {args.steps} optimizer steps of batch {BATCH_SIZE} on CoLA in_domain_train, lr {HF_LR}, "
        f"median of {args.rounds} interleaved rounds (fresh process each).",
        "",
        "| configuration | samples/s (median) | × HF Trainer fp32 | all rounds |",
        "|---|---:|---:|---|",
    ]
    lines += [f"| {n} | {m:.1f} | {r:.2f}× | {', '.join(f'{x:.1f}' for x in v)} |" for n, m, r, v in rows]
    if full_rows:
        lines += ["", "Full runs (GLUE dev = in_domain_dev + out_of_domain_dev, 1043 sentences):", "",
                  "| run | GLUE-dev MCC | samples/s | best epoch | val MCC per epoch |", "|---|---:|---:|---:|---|"]
        for name, r in full_rows:
            history = ", ".join(map(str, r.get("history", []))) or "—"
            lines.append(f"| {name} | {r['val_mcc']:.4f} | {r['samples_per_second']:.1f} | "
                         f"{r.get('best_epoch', '—')} | {history} |")
    section = "\n".join(lines) + "\n"
    print(section)
    if args.write:
        write_section(REPO / "docs" / "benchmarks.md", section)


if __name__ == "__main__":
    main()

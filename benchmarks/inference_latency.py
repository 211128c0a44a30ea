"""Inference latency: eager Hugging Face vs TorchScript (none / freeze / optimize_for_inference) vs ONNX Runtime,
and the local endpoint (`cola_bert.serve`) with 8 concurrent clients. Not a test.

Every backend runs behind the same handler code (`cola_bert.inference.ColaModel`: `tokenizers` tokenization, dynamic
padding, softmax), so only the model execution differs. Backends are measured round-robin, one call each per round,
so background load on a shared machine hits all of them alike. Sentences are CoLA in_domain_dev (raw) when the
archive is found, else a built-in list.

    python benchmarks/inference_latency.py                       # MiniLM with a fresh classification head
    python benchmarks/inference_latency.py --model-dir RUN/model --write docs/benchmarks_inference.md
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHIVES = [REPO / "data" / "cola_public_1.1.zip", REPO.parent / "shared" / "data" / "cola_public_1.1.zip"]
FALLBACK_SENTENCES = [
    "Our friends won't buy this analysis, let alone the next one we propose.",
    "One more pseudo generalization and I'm giving up.",
    "The more we study verbs, the crazier they get.",
    "Day by day the facts are getting murkier.",
    "John wrote his paper and Bill did too.",
    "The sailors rode the breeze clear of the rocks.",
    "The weights made the rope stretch over the pulley.",
    "They drank the pub.",
]


def cola_sentences() -> tuple[list[str], str]:
    for archive in ARCHIVES:
        if archive.is_file():
            with zipfile.ZipFile(archive) as zf:
                text = zf.read("cola_public/raw/in_domain_dev.tsv").decode("utf-8")
            rows = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
            return [row[3] for row in rows if len(row) >= 4], f"CoLA in_domain_dev ({archive.name})"
    return FALLBACK_SENTENCES, "built-in list (CoLA archive not found)"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def build_minilm_dir(target: Path) -> Path:
    import torch

    from cola_bert.backbone import load_model, load_tokenizer, minilm_path

    torch.manual_seed(0)
    model = load_model(minilm_path())  # all-MiniLM-L6-v2 + a randomly initialised 2-label head
    model.save_pretrained(target)
    load_tokenizer(minilm_path()).save_pretrained(target)
    return target


def cpu_description() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or "unknown CPU"
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    info = {k.strip(): v.strip() for k, v in info.items()}
    flags = info.get("Flags", "")
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags.split())
    return (f"{info.get('Model name', '?')} ({info.get('Architecture', '?')}), {info.get('CPU(s)', '?')} vCPU, "
            f"{info.get('Thread(s) per core', '?')} thread/core, {info.get('Hypervisor vendor', 'bare metal')} VM; "
            f"{isa}; no GPU")


# ----------------------------------------------------------------------------------------------- in-process runs
def measure_backends(models: dict, sentences: list[str], single_rounds: int, batch_rounds: int, batch: int) -> dict:
    import random

    rng = random.Random(0)
    single = {name: [] for name in models}
    batched = {name: [] for name in models}
    for model in models.values():  # warm-up: a few shapes each
        for n in (1, 5, 17):
            model.logits(sentences[:n])
    for _ in range(single_rounds):
        sentence = [rng.choice(sentences)]
        for name, model in models.items():
            start = time.perf_counter()
            model.logits(sentence)
            single[name].append(time.perf_counter() - start)
    for _ in range(batch_rounds):
        chunk = rng.sample(sentences, batch)
        for name, model in models.items():
            start = time.perf_counter()
            model.logits(chunk, batch_size=batch)
            batched[name].append(time.perf_counter() - start)
    results = {}
    for name in models:
        results[name] = {
            "p50_ms": 1000 * percentile(single[name], 50),
            "p95_ms": 1000 * percentile(single[name], 95),
            "batch_sentences_per_s": batch / statistics.median(batched[name]),
            "batch_p50_ms": 1000 * statistics.median(batched[name]),
        }
    return results


# ------------------------------------------------------------------------------------------------------ endpoint
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure_endpoint(artifact: Path, sentences: list[str], requests: int, clients: int, sequential: int) -> dict:
    import httpx

    from cola_bert import inference

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "cola_bert.serve", "--model-dir", str(artifact),
                             "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(url + "/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"endpoint did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.2)
        bodies = [json.dumps([sentences[i % len(sentences)]]) for i in range(max(requests, sequential))]
        headers = {"Content-Type": "application/json", "Accept": "application/json"}

        # sequential: one client, so latency = handler work + HTTP/serving overhead
        seq = []
        with httpx.Client(base_url=url, timeout=60) as client:
            for body in bodies[:20]:
                client.post("/invocations", content=body, headers=headers)
            for body in bodies[:sequential]:
                start = time.perf_counter()
                response = client.post("/invocations", content=body, headers=headers)
                seq.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text

        async def concurrent() -> tuple[list[float], float, list[int]]:
            latencies, statuses = [], []
            queue = list(bodies[:requests])
            async with httpx.AsyncClient(base_url=url, timeout=60,
                                         limits=httpx.Limits(max_connections=clients)) as client:
                async def worker():
                    while queue:
                        body = queue.pop()
                        start = time.perf_counter()
                        response = await client.post("/invocations", content=body, headers=headers)
                        latencies.append(time.perf_counter() - start)
                        statuses.append(response.status_code)

                start = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(clients)))
                return latencies, time.perf_counter() - start, statuses

        latencies, elapsed, statuses = asyncio.run(concurrent())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()

    # the same requests in-process (server idle now): input_fn -> predict_fn -> output_fn
    model = inference.load_artifact(artifact)
    for body in bodies[:20]:
        inference.transform(model, body, "application/json", "application/json")
    direct = []
    for body in bodies[:sequential]:
        start = time.perf_counter()
        inference.transform(model, body, "application/json", "application/json")
        direct.append(time.perf_counter() - start)
    return {
        "clients": clients,
        "requests": requests,
        "non_200": sum(1 for s in statuses if s != 200),
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        "requests_per_s": len(latencies) / elapsed,
        "sequential_p50_ms": 1000 * percentile(seq, 50),
        "in_process_p50_ms": 1000 * percentile(direct, 50),
        "overhead_p50_ms": 1000 * (percentile(seq, 50) - percentile(direct, 50)),
    }


# ------------------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="a trained RUN/model (default: MiniLM + a fresh classification head)")
    parser.add_argument("--single-rounds", type=int, default=300)
    parser.add_argument("--batch-rounds", type=int, default=12)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--sequential", type=int, default=150)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--full-verify", action="store_true", help="export with the default verification shapes")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--write", metavar="MD", help="write the results as markdown to this file")
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from cola_bert import inference
    from cola_bert.export import export_model

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_before = os.getloadavg()
    sentences, sentence_source = cola_sentences()
    verify = {} if args.full_verify else {"batch_sizes": [1, 8], "lengths": [1, 2, 16, 33, 64, 128]}
    with tempfile.TemporaryDirectory(prefix="cola-bench-") as tmp:
        tmp = Path(tmp)
        model_dir = Path(args.model_dir) if args.model_dir else build_minilm_dir(tmp / "minilm")
        exports, diffs = {}, {}
        for name, fmt, opt in [("TorchScript (trace)", "torchscript", "none"),
                               ("TorchScript (trace+freeze)", "torchscript", "freeze"),
                               ("TorchScript (freeze+optimize_for_inference)", "torchscript", "optimize_for_inference"),
                               ("ONNX Runtime", "onnx", "freeze")]:
            if fmt == "onnx" and args.no_onnx:
                continue
            out = tmp / f"export_{fmt}_{opt}"
            t0 = time.perf_counter()
            export_model(model_dir, out, format=fmt, jit_optimize=opt, **verify)
            exports[name] = out / "model"
            diffs[name] = json.loads((out / "model" / "manifest.json").read_text())["max_abs_logit_diff"]
            print(f"exported {name} in {time.perf_counter() - t0:.0f}s, max |Δlogit| {diffs[name]:.2g}", flush=True)

        cpu = torch.device("cpu")
        base = inference.load_artifact(exports["TorchScript (trace+freeze)"], device=cpu)
        models = {"eager Hugging Face": inference.ColaModel(inference.load_hf_runner(base.model_dir, cpu),
                                                            base.tokenizer, base.manifest, base.model_dir)}
        for name, path in exports.items():
            models[name] = inference.load_artifact(path, device=cpu)
        backends = measure_backends(models, sentences, args.single_rounds, args.batch_rounds, args.batch)
        default_artifact = exports["TorchScript (trace+freeze)"]
        endpoint = measure_endpoint(default_artifact, sentences, args.requests, args.clients, args.sequential)

    eager_p50 = backends["eager Hugging Face"]["p50_ms"]
    for name, row in backends.items():
        row["p50_vs_eager"] = row["p50_ms"] / eager_p50
        row["max_abs_logit_diff"] = diffs.get(name, 0.0)
    result = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python " + " ".join([str(Path(sys.argv[0]).relative_to(REPO)) if Path(sys.argv[0]).is_absolute()
                                         and REPO in Path(sys.argv[0]).parents else sys.argv[0], *sys.argv[1:]]),
        "cpu": cpu_description(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "model": str(args.model_dir or "all-MiniLM-L6-v2 (6 layers, hidden 384) + fresh 2-label head"),
        "sentences": f"{sentence_source}, {len(sentences)} sentences",
        "load_avg": [round(x, 2) for x in load_before] + [round(x, 2) for x in os.getloadavg()],
        "runtime_s": round(time.perf_counter() - started),
        "backends": backends, "endpoint": endpoint,
        "verification": "reduced (batch 1, 8 × lengths 1..128)" if verify else "default (batch 1, 8, 64)",
    }
    print(json.dumps(result, indent=2))
    markdown = to_markdown(result)
    print(markdown)
    if args.write:
        Path(args.write).write_text(markdown, encoding="utf-8")
    return 0


def to_markdown(r: dict) -> str:
    lines = [
        "## Inference latency (CPU)",
        "",
        f"- Date: {r['date']}; runtime {r['runtime_s']} s",
        f"- Command: `{r['command']}`",
        f"- Machine: {r['cpu']}; torch {r['torch']} with {r['threads']} intra-op threads. The machine was shared "
        f"with other jobs: load average {r['load_avg'][0]} before / {r['load_avg'][3]} after (1 min).",
        f"- Model: {r['model']}; max_length 128; sentences: {r['sentences']}.",
        "- Every backend runs behind the same handler (`ColaModel.logits`: `tokenizers` tokenization, dynamic padding,",
        "  float32 logits), measured round-robin so background load hits all alike. Single sentence = one request of",
        "  one sentence; batch = 32 random sentences in one forward pass.",
        "",
        "| backend | single p50 (ms) | single p95 (ms) | p50 vs eager | batch-32 p50 (ms) | batch-32 sentences/s "
        "| max \\|Δlogit\\| |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in r["backends"].items():
        lines.append(f"| {name} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {row['p50_vs_eager']:.2f}× | "
                     f"{row['batch_p50_ms']:.1f} | {row['batch_sentences_per_s']:.0f} | "
                     f"{row['max_abs_logit_diff']:.1g} |")
    e = r["endpoint"]
    lines += [
        "",
        f"Local endpoint (`cola_bert.serve`, TorchScript trace+freeze, 1 inference thread), single-sentence JSON "
        f"requests from {e['clients']} concurrent clients ({e['requests']} requests, {e['non_200']} non-200):",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| p50 latency, {e['clients']} clients (ms) | {e['p50_ms']:.1f} |",
        f"| p99 latency, {e['clients']} clients (ms) | {e['p99_ms']:.1f} |",
        f"| requests/s, {e['clients']} clients | {e['requests_per_s']:.0f} |",
        f"| p50 latency, 1 client (ms) | {e['sequential_p50_ms']:.2f} |",
        f"| p50 in-process input_fn→predict_fn→output_fn (ms) | {e['in_process_p50_ms']:.2f} |",
        f"| endpoint overhead at p50 (ms) | {e['overhead_p50_ms']:.2f} |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

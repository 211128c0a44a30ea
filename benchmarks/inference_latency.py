"""Inference speed and int8 accuracy: eager Hugging Face vs TorchScript fp32 vs ONNX Runtime fp32 vs ONNX int8
(what `cola_bert.export` ships: fused graph, MatMulInteger with per-token activation scales, LayerNorm as primitive
ops), the block-wise option (int8_matmul=blockwise: 8-bit MatMulNBits), two candidates that are not shipped (ONNX
int8 with per-tensor activations, TorchScript with torch's dynamic int8), and optionally the local endpoint
(`cola_bert.serve`). Not a test.

Every backend runs behind the same handler code (`cola_bert.inference.ColaModel`: `tokenizers` tokenization, dynamic
padding, softmax), so only the model execution differs. Backends take turns in short blocks on the same sentences,
so background load on a shared machine hits all of them alike; the ratios come from the same rounds. Sentences are
GLUE dev (CoLA in_domain_dev + out_of_domain_dev, 1043, labelled) when the archive is found, else a built-in list.
With a fine-tuned --model-dir, the GLUE-dev MCC and label agreement of every backend with the fp32 eager model are
reported too.

    python benchmarks/inference_latency.py --model-dir RUN/model --write docs/benchmarks.md
    python benchmarks/inference_latency.py --threads 1,2 --endpoint      # MiniLM with a fresh head; + local endpoint
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import http.client
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from markdown_report import write_section  # noqa: E402

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


def cola_sentences() -> tuple[list[str], list[int] | None, str]:
    """GLUE dev sentences and labels (CoLA in_domain_dev + out_of_domain_dev), else a built-in list without labels."""
    for archive in ARCHIVES:
        if archive.is_file():
            sentences, labels = [], []
            with zipfile.ZipFile(archive) as zf:
                for member in ("cola_public/raw/in_domain_dev.tsv", "cola_public/raw/out_of_domain_dev.tsv"):
                    text = zf.read(member).decode("utf-8")
                    for row in csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE):
                        if len(row) >= 4:
                            sentences.append(row[3])
                            labels.append(int(row[1]))
            return sentences, labels, f"GLUE dev, CoLA in_domain_dev + out_of_domain_dev ({archive.name})"
    return FALLBACK_SENTENCES, None, "built-in list (CoLA archive not found)"


def mcc(labels: list[int], predictions: list[int]) -> float:
    """Matthews correlation coefficient of binary labels."""
    tp = sum(1 for y, p in zip(labels, predictions) if y == 1 and p == 1)
    tn = sum(1 for y, p in zip(labels, predictions) if y == 0 and p == 0)
    fp = sum(1 for y, p in zip(labels, predictions) if y == 0 and p == 1)
    fn = sum(1 for y, p in zip(labels, predictions) if y == 1 and p == 0)
    denominator = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    return (tp * tn - fp * fn) / denominator if denominator else 0.0


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
BLOCK = 20


def measure_backends(models: dict, sentences: list[str], single_rounds: int, batch_rounds: int, batch: int) -> dict:
    """Single sentences: the backends take turns in blocks of ``BLOCK`` calls on the same sentences, so background
    load hits all alike while each block runs with its own weights in the CPU caches, as an endpoint serving one
    model does (with one call per turn, every call would start with the other backends' weights in the caches).
    Batches: one request of ``batch`` random sentences per backend per round, through ``ColaModel.logits``."""
    import random

    rng = random.Random(0)
    single = {name: [] for name in models}
    batched = {name: [] for name in models}
    for model in models.values():  # warm-up: a few shapes each
        for n in (1, 5, 17):
            model.logits(sentences[:n])
    for _ in range(0, single_rounds, BLOCK):  # backends take turns in blocks of BLOCK calls (see the docstring)
        block = [[rng.choice(sentences)] for _ in range(BLOCK)]
        for name, model in models.items():
            for sentence in block:
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


def measure_endpoint(artifact: Path, sentences: list[str], requests: int, clients: int, sequential: int,
                     threads: int = 0) -> dict:
    import httpx

    from cola_bert import inference

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch reads it at start-up
    proc = subprocess.Popen([sys.executable, "-m", "cola_bert.serve", "--model-dir", str(artifact),
                             "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
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

        # One client vs the same requests in-process (input_fn -> predict_fn -> output_fn), alternating in blocks of
        # 25 with a short pause between blocks (so neither side's idle OpenMP threads are still spinning when the
        # other starts). The difference of the medians is the endpoint's own cost: HTTP client and server, routing,
        # the hop to the inference thread, body handling. Measured with the stdlib keep-alive client (light) and
        # with httpx (which itself costs about a millisecond per request in Python on this CPU).
        model = inference.load_artifact(artifact)
        seq, seq_httpx, direct = [], [], []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def post_stdlib(body: str) -> int:
            conn.request("POST", "/invocations", body=body.encode("utf-8"), headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status

        with httpx.Client(base_url=url, timeout=60) as client:
            for body in bodies[:20]:
                post_stdlib(body)
                client.post("/invocations", content=body, headers=headers)
                inference.transform(model, body, "application/json", "application/json")
            for block in range(0, sequential, 25):
                for body in bodies[block:block + 25]:
                    start = time.perf_counter()
                    status = post_stdlib(body)
                    seq.append(time.perf_counter() - start)
                    assert status == 200, status
                time.sleep(0.2)
                for body in bodies[block:block + 25]:
                    start = time.perf_counter()
                    inference.transform(model, body, "application/json", "application/json")
                    direct.append(time.perf_counter() - start)
                time.sleep(0.2)
                for body in bodies[block:block + 25]:
                    start = time.perf_counter()
                    response = client.post("/invocations", content=body, headers=headers)
                    seq_httpx.append(time.perf_counter() - start)
                    assert response.status_code == 200, response.text
                time.sleep(0.2)
        conn.close()
        del model

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
        "sequential_httpx_p50_ms": 1000 * percentile(seq_httpx, 50),
        "overhead_httpx_p50_ms": 1000 * (percentile(seq_httpx, 50) - percentile(direct, 50)),
    }


# ------------------------------------------------------------------------------------------------------------ main
EAGER = "eager (Hugging Face)"
TS = "TorchScript fp32"
ONNX = "ONNX Runtime fp32"
INT8 = "ONNX Runtime int8"
INT8_BLOCK = "ONNX int8, block-wise MatMulNBits (int8_matmul=blockwise)"
INT8_ALL = "ONNX int8, per-tensor activations (int8_matmul=per_tensor, not shipped)"
TS_INT8 = "TorchScript + torch dynamic int8 (not shipped)"


def torch_int8_model(model_dir: Path, base, device):
    """torch.ao dynamic int8 on every nn.Linear, traced like the fp32 export: the int8 TorchScript candidate."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from cola_bert import inference
    from cola_bert.export_formats import LogitsWrapper, example_inputs

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    with torch.no_grad():
        traced = torch.jit.freeze(torch.jit.trace(LogitsWrapper(quantized).eval(), example_inputs(16, 0),
                                                  check_trace=False, strict=True).eval())
    runner = inference.TorchModuleRunner(traced, device, "torchscript-int8")
    return inference.ColaModel(runner, base.tokenizer, base.manifest, base.model_dir)


def load_models(exports: dict, extras: bool, model_dir: Path) -> dict:
    import torch

    from cola_bert import inference

    cpu = torch.device("cpu")
    base = inference.load_artifact(exports[TS], device=cpu)
    models = {EAGER: inference.ColaModel(inference.load_hf_runner(exports["hf"], cpu), base.tokenizer,
                                         base.manifest, base.model_dir)}
    for name in (TS, ONNX, INT8, INT8_BLOCK, INT8_ALL):
        if name in exports:
            models[name] = inference.load_artifact(exports[name], device=cpu)  # ONNX threads follow torch's
    if extras:
        models[TS_INT8] = torch_int8_model(model_dir, base, cpu)
    return models


def accuracy(models: dict, sentences: list[str], labels: list[int] | None) -> dict:
    import torch

    reference = None
    results = {}
    for name, model in models.items():
        probabilities = torch.softmax(model.logits(sentences), dim=-1)
        predicted = probabilities.argmax(-1).tolist()
        if reference is None:
            reference = (probabilities, predicted)
        results[name] = {
            "agreement": sum(a == b for a, b in zip(predicted, reference[1])) / len(predicted),
            "max_abs_prob_diff": float((probabilities - reference[0]).abs().max()),
            "mcc": mcc(labels, predicted) if labels else None,
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="a fine-tuned RUN/model (default: MiniLM + a fresh classification head)")
    parser.add_argument("--single-rounds", type=int, default=200)
    parser.add_argument("--batch-rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", default="1",
                        help="comma-separated thread counts (torch.set_num_threads; ONNX Runtime follows torch)")
    parser.add_argument("--no-extras", action="store_true", help="skip the candidates that are not shipped")
    parser.add_argument("--endpoint", action="store_true", help="also measure the local endpoint (TorchScript)")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--sequential", type=int, default=150)
    parser.add_argument("--note", default="", help="what else ran on the machine during the benchmark")
    parser.add_argument("--write", metavar="MD", help="write the results as markdown into this file's section")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from cola_bert.export import export_model

    thread_counts = [int(t) for t in str(args.threads).split(",") if t.strip()]
    started = time.perf_counter()
    load_before = os.getloadavg()
    sentences, labels, sentence_source = cola_sentences()
    verify = {"batch_sizes": [1, 8], "lengths": [1, 2, 16, 33, 64, 128]}
    with tempfile.TemporaryDirectory(prefix="cola-bench-") as tmp:
        tmp = Path(tmp)
        model_dir = Path(args.model_dir) if args.model_dir else build_minilm_dir(tmp / "minilm")
        exports, manifests = {"hf": model_dir}, {}
        plan = [(TS, {"format": "torchscript"}), (ONNX, {"format": "onnx"}),
                (INT8, {"format": "onnx", "quantize": "int8"})]
        if not args.no_extras:
            plan.append((INT8_BLOCK, {"format": "onnx", "quantize": "int8", "int8_matmul": "blockwise"}))
            plan.append((INT8_ALL, {"format": "onnx", "quantize": "int8", "int8_matmul": "per_tensor"}))
        for name, settings in plan:
            out = tmp / name.split(" (")[0].replace(" ", "_").replace(",", "")
            t0 = time.perf_counter()
            export_model(model_dir, out, min_agreement=0.0, **settings, **verify)
            exports[name] = out / "model"
            manifests[name] = json.loads((out / "model" / "manifest.json").read_text())
            manifests[name]["tarball_mb"] = (out / "model.tar.gz").stat().st_size / 1e6
            manifests[name]["graph_mb"] = (out / "model" / manifests[name]["model_file"]).stat().st_size / 1e6
            print(f"exported {name} in {time.perf_counter() - t0:.0f}s", flush=True)

        by_threads, quality = {}, None
        for threads in thread_counts:
            torch.set_num_threads(threads)
            models = load_models(exports, not args.no_extras, model_dir)
            if quality is None:
                quality = accuracy(models, sentences, labels)
                print("accuracy:", json.dumps(quality), flush=True)
            rows = measure_backends(models, sentences, args.single_rounds, args.batch_rounds, args.batch)
            for name, row in rows.items():
                row["p50_vs_eager"] = row["p50_ms"] / rows[EAGER]["p50_ms"]
                row["p50_vs_torchscript"] = row["p50_ms"] / rows[TS]["p50_ms"]
                row["batch_vs_eager"] = row["batch_sentences_per_s"] / rows[EAGER]["batch_sentences_per_s"]
            by_threads[threads] = rows
            print(f"measured backends with {threads} thread(s):", json.dumps(rows), flush=True)
            del models
        endpoint = None
        if args.endpoint:
            torch.set_num_threads(thread_counts[0])
            endpoint = measure_endpoint(exports[TS], sentences, args.requests, args.clients, args.sequential,
                                        thread_counts[0])

    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO) if REPO in script.parents else script
    result = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", str(shown), *sys.argv[1:]]),
        "cpu": cpu_description(),
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "model": str(args.model_dir or "all-MiniLM-L6-v2 (6 layers, hidden 384) + fresh 2-label head"),
        "sentences": f"{sentence_source}, {len(sentences)} sentences",
        "labelled": labels is not None,
        "load_avg": [round(x, 2) for x in load_before] + [round(x, 2) for x in os.getloadavg()],
        "runtime_s": round(time.perf_counter() - started),
        "rounds": {"single": args.single_rounds, "batch": args.batch_rounds, "batch_size": args.batch},
        "backends": by_threads, "quality": quality, "endpoint": endpoint, "endpoint_threads": thread_counts[0],
        "artifacts": {name: {key: m.get(key) for key in ("tarball_mb", "graph_mb", "max_abs_logit_diff",
                                                           "quantization", "agreement")}
                      for name, m in manifests.items()},
        "note": args.note,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    markdown = to_markdown(result)
    print(markdown)
    if args.write:
        write_section(Path(args.write), markdown)
    return 0


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def to_markdown(r: dict) -> str:
    rounds = r["rounds"]
    lines = [
        "## Inference latency (CPU)",
        "",
        f"- Date: {r['date']}; benchmark runtime {r['runtime_s']} s.",
        f"- Command: `{r['command']}`",
        f"- Machine: {r['cpu']}; torch {r['torch']}, onnxruntime {r['onnxruntime']}. 1-min load average "
        f"{r['load_avg'][0]} before, {r['load_avg'][3]} after, on 2 vCPUs"
        + (f": {r['note']}" if r["note"] else "") + ". Absolute numbers are noisy on a shared machine; the ratios "
        "come from the same interleaved rounds.",
        f"- Model: {r['model']}; max_length 128; sentences: {r['sentences']}.",
        "- Every backend runs behind the same handler code (`ColaModel.logits`: `tokenizers` tokenization, dynamic",
        f"  padding, float32 logits). Single sentences: {rounds['single']} random ones per backend, the backends taking "
        "turns in blocks of 20 calls on the same sentences (weights stay in the CPU caches within a block, as on an "
        f"endpoint serving one model). Batches: {rounds['batch']} rounds of one request of {rounds['batch_size']} "
        "random sentences per backend, which the handler sorts by length and runs in chunks padded by at most 25%. "
        "ONNX Runtime gets as many intra-op threads as torch.",
        "",
    ]
    for threads, rows in r["backends"].items():
        lines += [
            f"### {threads} thread{'s' if int(threads) > 1 else ''} (`torch.set_num_threads({threads})`)",
            "",
            f"| backend | single p50 (ms) | single p95 (ms) | p50 vs TorchScript | p50 vs eager "
            f"| batch-{rounds['batch_size']} sentences/s | batch vs eager |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, row in rows.items():
            lines.append(f"| {name} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {row['p50_vs_torchscript']:.2f}× "
                         f"| {row['p50_vs_eager']:.2f}× | {row['batch_sentences_per_s']:.0f} | "
                         f"{row['batch_vs_eager']:.2f}× |")
        lines.append("")
    quality = r["quality"]
    lines += [
        "### Accuracy against the fp32 eager model" + (" and GLUE-dev MCC" if r["labelled"] else ""),
        "",
        "| backend | label agreement with eager | max \\|Δprob\\| | " + ("GLUE-dev MCC | ΔMCC |" if r["labelled"] else ""),
        "|---|---:|---:|" + ("---:|---:|" if r["labelled"] else ""),
    ]
    eager_mcc = quality[EAGER]["mcc"]
    for name, q in quality.items():
        row = f"| {name} | {100 * q['agreement']:.2f}% | {q['max_abs_prob_diff']:.4f} |"
        if r["labelled"]:
            row += f" {q['mcc']:.4f} | {q['mcc'] - eager_mcc:+.4f} |"
        lines.append(row)
    lines += ["", "### Artifact sizes (`python -m cola_bert.export`, lean default)", "",
              "| export | graph file (MB) | model.tar.gz (MB) | tarball / graph |", "|---|---:|---:|---:|"]
    for name, a in r["artifacts"].items():
        lines.append(f"| {name} | {a['graph_mb']:.1f} | {a['tarball_mb']:.1f} | {a['tarball_mb'] / a['graph_mb']:.2f} |")
    lines.append("")
    e = r["endpoint"]
    if e:
        lines += [
            f"### Local endpoint (`cola_bert.serve`, TorchScript fp32, 1 inference thread, "
            f"OMP_NUM_THREADS={r['endpoint_threads']})",
            "",
            f"Single-sentence JSON requests; {e['clients']} concurrent clients sent {e['requests']} requests "
            f"({e['non_200']} non-200). The clients run on the same 2 vCPUs as the server.",
            "",
            "| metric | value |",
            "|---|---:|",
            f"| p50 latency, {e['clients']} clients (ms) | {e['p50_ms']:.1f} |",
            f"| p99 latency, {e['clients']} clients (ms) | {e['p99_ms']:.1f} |",
            f"| requests/s, {e['clients']} clients | {e['requests_per_s']:.0f} |",
            f"| p50 latency, 1 client, stdlib http.client keep-alive (ms) | {e['sequential_p50_ms']:.2f} |",
            f"| p50 in-process input_fn→predict_fn→output_fn, same requests (ms) | {e['in_process_p50_ms']:.2f} |",
            f"| **endpoint overhead at p50** (stdlib client − in-process) (ms) | **{e['overhead_p50_ms']:.2f}** |",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

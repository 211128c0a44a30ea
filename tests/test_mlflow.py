"""logger=mlflow: real tiny-model runs tracked in a local SQLite store and on a real `mlflow server` process.

Checked through MlflowClient: the params are the run's resolved config (flattened), the metrics are per epoch (and
the last value is the best checkpoint's, as in metrics.json), the artifacts are the run's metrics.json, config.yaml
and plots/, and the jobs of one sweep share the `sweep_dir` tag.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cli_support import read_summary, run_module, smoke_args
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cola_bert.config import conf_dir
from cola_bert.tracking import flatten_config, local_artifact_root

mlflow = pytest.importorskip("mlflow", reason="the [mlflow] extra is part of [dev]")
from mlflow.tracking import MlflowClient  # noqa: E402

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/cola-bert"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 (SQLite backend, proxied artifacts), stopped with its workers at teardown."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    log_path = root / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job workers
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/server.db",
             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    give_up = time.monotonic() + 240  # a busy 2-core machine needs ~30 s
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > give_up:
                    pytest.fail(f"mlflow server not answering on {url}:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its uvicorn worker
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def compose_logger(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir()), job_name="test"):
        return compose(config_name="train", overrides=["logger=mlflow", *overrides]).logger.mlflow


def test_tracking_uri_default_and_pass_through(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    node = compose_logger(f"paths.log_dir={tmp_path}")
    assert node.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db" and node.experiment_name == "cola-bert"
    assert local_artifact_root(node.tracking_uri) == (tmp_path / "mlartifacts").as_uri()
    # A SageMaker managed MLflow ARN (or a server URL) reaches MLflow as given; the server picks artifact storage.
    assert compose_logger(f"logger.mlflow.tracking_uri={ARN}").tracking_uri == ARN
    assert local_artifact_root(ARN) is None and local_artifact_root("http://127.0.0.1:5000") is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ARN)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "cloud")
    node = compose_logger()
    assert (node.tracking_uri, node.experiment_name) == (ARN, "cloud")


def history(client: MlflowClient, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))]


@pytest.mark.timeout(900)  # real training runs (and a server start) in one test
def test_local_store_has_the_config_per_epoch_metrics_and_run_files(cola_archive, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    run_dir = tmp_path / "run"
    proc = run_module("cola_bert.train", *smoke_args(cola_archive, tmp_path), f"hydra.run.dir={run_dir}",
                      "logger=mlflow", "trainer.max_epochs=2")
    assert "Creating initial MLflow database tables" not in proc.stdout + proc.stderr

    store = tmp_path / "outputs"  # paths.log_dir: the default store is <log_dir>/mlflow.db
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("cola-bert")
    assert experiment.artifact_location == (store / "mlartifacts").as_uri()  # next to the database, not ./mlruns
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "smoke/run"
    assert run.data.tags["run_dir"] == str(run_dir.resolve()) and "sweep_dir" not in run.data.tags

    config = OmegaConf.load(run_dir / "config.yaml")
    expected = {key: value[:250] for key, value in flatten_config(config).items()}  # MLflow's param length
    assert run.data.params == expected
    assert run.data.params["model.optimizer.lr"] == "0.001" and run.data.params["trainer.max_epochs"] == "2"

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [0, 1]
    for key in ("val/mcc", "val/loss", "val/accuracy", "train/loss"):
        per_epoch = [row[key] for row in metrics["history"]]
        logged = history(client, run.info.run_id, key)
        assert logged[:2] == pytest.approx(per_epoch, abs=1e-6), key
    # The re-validation of the best checkpoint adds the final value: the number metrics.json reports.
    assert history(client, run.info.run_id, "val/loss")[-1] == pytest.approx(metrics["val/loss"], abs=1e-6)
    assert run.data.metrics["val/mcc"] == pytest.approx(metrics["val/mcc"], abs=1e-6)

    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"metrics.json", "config.yaml", "plots"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {
        "plots/learning_curves.png", "plots/confusion_matrix.png"}
    local = client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path))
    assert json.loads(Path(local).read_text()) == metrics
    assert (store / "mlartifacts" / run.info.run_id / "artifacts" / "metrics.json").is_file()


@pytest.mark.timeout(900)  # real training runs (and a server start) in one test
def test_sweep_jobs_share_a_tag_on_a_real_server(cola_archive, tmp_path, mlflow_server):
    url, server_root = mlflow_server
    sweep_dir = tmp_path / "sweep"
    run_module("cola_bert.train", "-m", *smoke_args(cola_archive, tmp_path), f"hydra.sweep.dir={sweep_dir}",
               "logger=mlflow", f"logger.mlflow.tracking_uri={url}", "logger.mlflow.experiment_name=sweep-test",
               "model.optimizer.lr=1e-3,1e-4")
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("sweep-test")
    assert not experiment.artifact_location.startswith("file:")  # the server's artifact store, not a local path
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.sweep_dir = '{sweep_dir.resolve()}'")
    by_job = {run.data.tags["sweep_job"]: run for run in runs}
    assert sorted(by_job) == ["0", "1"]
    summary = {row["job"]: row for row in read_summary(sweep_dir)}
    for job, lr in (("0", "0.001"), ("1", "0.0001")):
        run = by_job[job]
        assert run.info.run_name == f"smoke/sweep/{job}"
        assert run.data.params["model.optimizer.lr"] == lr
        assert f"model.optimizer.lr={lr}" in run.data.tags["overrides"]
        assert run.data.metrics["val/mcc"] == pytest.approx(float(summary[job]["val/mcc"]), abs=1e-6)
        local = client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path / job))
        assert json.loads(Path(local).read_text()) == json.loads(Path(summary[job]["run_dir"], "metrics.json").read_text())
    # Uploaded through the server into its own artifact store.
    assert len(list((server_root / "artifacts").rglob("learning_curves.png"))) == 2


def test_reachability_check_uses_mlflow_own_request(monkeypatch):
    """Before training, an http(s) tracking server is asked for /health once, through MLflow's own request code (its
    TLS, proxy and credential settings): credentials in the URI and any HTTP answer (404 from a proxy) pass, a closed
    port fails at once, and the password never reaches the message."""
    import http.server
    import threading

    from mlflow.exceptions import MlflowException

    from cola_bert.tracking import _check_reachable, explain_error

    seen: list[tuple[str, str | None]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        _check_reachable(f"http://user:s3cret@127.0.0.1:{port}")
        _check_reachable(f"http://127.0.0.1:{port}/prefix")  # /prefix/health: 404, still an answer
    finally:
        server.shutdown()
    assert seen[0][0] == "/health" and seen[0][1] is not None and seen[0][1].startswith("Basic ")
    assert seen[1][0] == "/prefix/health"

    closed = f"http://user:s3cret@127.0.0.1:{free_port()}"
    with pytest.raises(MlflowException, match="no answer within 10 s") as info:
        _check_reachable(closed)
    cfg = OmegaConf.create({"logger": {"mlflow": {"_target_": "pytorch_lightning.loggers.MLFlowLogger",
                                                  "tracking_uri": closed}}})  # fmt: skip
    message = str(explain_error(cfg, info.value))
    assert "s3cret" not in message and "user:***@127.0.0.1" in message

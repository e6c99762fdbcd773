"""Serving benchmarks (``glimpse bench --suite serving``): rows ``{name, ours_s, baseline_s, ratio, note}``.

1. Predict round trip over gRPC (tensorflow-serving-api's stub, a ``glimpse serve`` subprocess) vs the same signature
   run in-process by :class:`serving.session.SessionModel`, batch 1 on a MobileNetV2-size input (224x224x3 float);
   goal ratio <= 1.10.
2. The model's own batching gain in-process (batch 16, and the server's batch size, vs batch 1, per image), and the
   gain of batches run on the batch threads over 16 concurrent batch-1 runs (what the unbatched server does): the
   ceiling for 3.
3. Throughput of 16 concurrent batch-1 clients with ``--enable_batching`` vs without; the row's ratio is the time
   per request with batching over the time without (goal <= 0.67, i.e. >= 1.5x the throughput).
4. The server's peak resident memory (VmHWM).

Calls that are compared are interleaved, so that both sides see the same background load.

Without ``model_dir`` a MobileNetV2 (random weights; nothing is downloaded) is exported through
``keras.export.ExportArchive`` with the contract's ``predict_pixels`` signature into a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from glimpse_wire.contract import IN_IMAGES, OUT_CLASS_INDEX, OUT_LABEL, OUT_PROBABILITIES, SIG_PIXELS

__all__ = ["run_serving_benchmarks", "export_mobilenet"]

_MODEL = "bench"
_CLIENTS = 16
# Largest batch the server forms when batching is on: on a small CPU a convnet runs fastest per image at a few
# images per call (larger batches fall out of cache; see the in-process rows), so several small batches run at once
# on the batch threads. A GPU wants max_batch_size near the number of concurrent clients instead.
_SERVER_BATCH = 4
_REPO_ROOT = Path(__file__).resolve().parents[1]


def export_mobilenet(version_dir: Path, size: int = 224) -> Path:
    """MobileNetV2 (random init, 1000 classes) exported with ``predict_pixels`` (images 0-255) and its heads."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(input_shape=(size, size, 3), weights=None, classes=1000)
    labels = tf.constant([f"class_{i}" for i in range(1000)])

    def serve_pixels(images: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = backbone(images / 127.5 - 1.0, training=False)
        index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {OUT_PROBABILITIES: probabilities, OUT_CLASS_INDEX: index, OUT_LABEL: tf.gather(labels, index)}

    archive = keras.export.ExportArchive()
    archive.track(backbone)
    archive.add_endpoint(SIG_PIXELS, serve_pixels,
                         input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, IN_IMAGES)])
    archive.write_out(str(version_dir), verbose=False)
    return version_dir


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _server(base: Path, workdir: Path, extra: list[str]) -> Any:
    """A ``python -m serving`` subprocess; yields (address, pid) once it answers."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = _free_port()
    log = open(workdir / f"server-{port}.log", "wb")  # noqa: SIM115 - closed below
    command = [sys.executable, "-m", "serving", f"--port={port}", "--rest_api_port=0", "--bind_address=127.0.0.1",
               f"--model_name={_MODEL}", f"--model_base_path={base}", *extra]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(command, cwd=_REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"glimpse serve exited with {proc.returncode}; see {log.name}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"glimpse serve did not start within 180 s; see {log.name}")
            try:
                with grpc.insecure_channel(address) as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.3)
        yield address, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _peak_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _request(images: np.ndarray) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = _MODEL
    request.model_spec.signature_name = SIG_PIXELS
    request.inputs[IN_IMAGES].CopyFrom(tf.make_tensor_proto(images))
    return request


def _interleaved(first: Any, second: Any, reps: int, warmup: int = 3) -> tuple[float, float]:
    """Median seconds of two calls measured alternately (A, B, A, B, ...)."""
    for _ in range(warmup):
        first(), second()
    a, b = [], []
    for _ in range(reps):
        started = time.perf_counter()
        first()
        a.append(time.perf_counter() - started)
        started = time.perf_counter()
        second()
        b.append(time.perf_counter() - started)
    return statistics.median(a), statistics.median(b)


def _throughput(address: str, request: Any, total: int) -> float:
    """Seconds per request with 16 concurrent clients sending batch-1 requests (``total`` in all)."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channels = [grpc.insecure_channel(address) for _ in range(_CLIENTS)]
    stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]
    for stub in stubs:  # connect and warm up every client
        stub.Predict(request, timeout=120)
    per_client = max(1, total // _CLIENTS)
    barrier = threading.Barrier(_CLIENTS + 1)
    errors: list[BaseException] = []

    def client(stub: Any) -> None:
        barrier.wait()
        try:
            for _ in range(per_client):
                stub.Predict(request, timeout=300)
        except BaseException as e:  # reported after the run
            errors.append(e)

    threads = [threading.Thread(target=client, args=(s,)) for s in stubs]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for c in channels:
        c.close()
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]}")
    return elapsed / (per_client * _CLIENTS)


def _concurrent(model: Any, image: np.ndarray, threads: int, batch: int, images: int) -> float:
    """Seconds per image with ``threads`` threads each running batches of ``batch`` in-process (``images`` in all)."""
    x = np.repeat(image, batch, axis=0)
    per_thread = max(1, images // (threads * batch))

    def work() -> None:
        for _ in range(per_thread):
            model.run(SIG_PIXELS, {IN_IMAGES: x})

    model.run(SIG_PIXELS, {IN_IMAGES: x})
    workers = [threading.Thread(target=work) for _ in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return (time.perf_counter() - started) / (per_thread * threads * batch)


def _resolve(model_dir: str | Path | None, workdir: Path) -> tuple[Path, Path]:
    """(base path, version dir): export MobileNetV2 when no model is given."""
    if model_dir is None:
        base = workdir / _MODEL
        return base, export_mobilenet(base / "1")
    path = Path(model_dir)
    if (path / "saved_model.pb").exists():
        base = workdir / _MODEL
        base.mkdir()
        version = base / (path.name if path.name.isdigit() else "1")
        shutil.copytree(path, version)
        return base, version
    versions = sorted((p for p in path.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise FileNotFoundError(f"no SavedModel version under {path}")
    base = workdir / _MODEL
    shutil.copytree(versions[-1], base / versions[-1].name)
    return base, base / versions[-1].name


def run_serving_benchmarks(model_dir: str | Path | None = None, quick: bool = False) -> list[dict[str, Any]]:
    """Measure the rows described in the module docstring (a model with ``predict_pixels`` is required)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving.session import SessionModel

    reps = 10 if quick else 100
    total = 4 * _CLIENTS if quick else 12 * _CLIENTS
    workdir = Path(tempfile.mkdtemp(prefix="glimpse-bench-serving-"))
    rows: list[dict[str, Any]] = []
    try:
        base, version_dir = _resolve(model_dir, workdir)
        import grpc

        with SessionModel(version_dir) as model, _server(base, workdir, []) as (address, pid):
            shape = [d.size for d in model.signature(SIG_PIXELS).inputs[IN_IMAGES].tensor_shape.dim]
            image = np.random.default_rng(0).uniform(0, 255, size=(1, *shape[1:])).astype(np.float32)
            request = _request(image)
            size = "x".join(str(d) for d in shape[1:])
            with grpc.insecure_channel(address) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                # Interleaved, so that both see the same background load on a shared machine.
                in_process, round_trip = _interleaved(
                    lambda: model.run(SIG_PIXELS, {IN_IMAGES: image}), lambda: stub.Predict(request, timeout=120), reps,
                    warmup=10,
                )
            batch = np.repeat(image, _CLIENTS, axis=0)
            small = np.repeat(image, _SERVER_BATCH, axis=0)
            one_by_one, batched_in_process = _interleaved(
                lambda: model.run(SIG_PIXELS, {IN_IMAGES: image}), lambda: model.run(SIG_PIXELS, {IN_IMAGES: batch}),
                max(3, reps // 4),
            )
            one_by_one_small, small_in_process = _interleaved(
                lambda: model.run(SIG_PIXELS, {IN_IMAGES: image}), lambda: model.run(SIG_PIXELS, {IN_IMAGES: small}),
                max(3, reps // 4),
            )
            threads = max(1, min(os.cpu_count() or 1, 4))
            # What batching can buy at most: the model run the way each server runs it, in-process, without gRPC.
            concurrent_ones = _concurrent(model, image, _CLIENTS, 1, total)
            concurrent_batches = _concurrent(model, image, threads, _SERVER_BATCH, total)
            unbatched = _throughput(address, request, total)
            rss_plain = _peak_rss_mib(pid)
        rows.append({"name": f"gRPC Predict round trip, batch 1, {size} float", "ours_s": round_trip,
                     "baseline_s": in_process, "ratio": round_trip / in_process,
                     "note": f"baseline: SessionModel.run in-process; medians of {reps}, interleaved; goal <= 1.10"})
        rows.append({"name": f"in-process batch {_CLIENTS} vs {_CLIENTS} x batch 1 (s/image)",
                     "ours_s": batched_in_process / _CLIENTS, "baseline_s": one_by_one,
                     "ratio": batched_in_process / _CLIENTS / one_by_one,
                     "note": "the model's own batching gain on this machine: the ceiling for server-side batching"})
        rows.append({"name": f"in-process batch {_SERVER_BATCH} vs {_SERVER_BATCH} x batch 1 (s/image)",
                     "ours_s": small_in_process / _SERVER_BATCH, "baseline_s": one_by_one_small,
                     "ratio": small_in_process / _SERVER_BATCH / one_by_one_small,
                     "note": "the batch size the server forms below (max_batch_size)"})
        rows.append({"name": f"in-process {threads} threads x batch {_SERVER_BATCH} vs {_CLIENTS} threads x batch 1 "
                             "(s/image)",
                     "ours_s": concurrent_batches, "baseline_s": concurrent_ones,
                     "ratio": concurrent_batches / concurrent_ones,
                     "note": f"the most batching can gain over concurrent unbatched runs here: "
                             f"x{concurrent_ones / concurrent_batches:.2f}"})
        batching_file = workdir / "batching.config"
        batching_file.write_text(
            f"max_batch_size {{ value: {_SERVER_BATCH} }}\nbatch_timeout_micros {{ value: 2000 }}\n"
            f"num_batch_threads {{ value: {threads} }}\nmax_enqueued_batches {{ value: {_CLIENTS} }}\n"
        )
        with _server(base, workdir, ["--enable_batching", f"--batching_parameters_file={batching_file}"]) as (
            address, pid,
        ):
            batched = _throughput(address, request, total)
            rss_batching = _peak_rss_mib(pid)
        rows.append({"name": f"{_CLIENTS} concurrent batch-1 clients, batching on vs off (s/request)",
                     "ours_s": batched, "baseline_s": unbatched, "ratio": batched / unbatched,
                     "note": f"throughput x{unbatched / batched:.2f} with batching (goal >= 1.5x); "
                             f"{threads} batch threads x max {_SERVER_BATCH}; {total} requests each"})
        rss = max(v for v in (rss_plain, rss_batching, 0.0) if v is not None)
        note = f"{rss:.0f} MiB (no batching {rss_plain or 0:.0f} MiB, batching {rss_batching or 0:.0f} MiB)"
        rows.append({"name": "server peak RSS (VmHWM)", "ours_s": None, "baseline_s": None, "ratio": None,
                     "note": note})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


if __name__ == "__main__":
    _args = [a for a in sys.argv[1:] if a != "--quick"]
    for _row in run_serving_benchmarks(_args[0] if _args else None, quick="--quick" in sys.argv):
        print(_row)

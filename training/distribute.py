"""``glimpse train --distribute``: tf.distribute strategies for the one fit path.

- ``none`` (default): no strategy, training as it always was.
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over all local GPUs (one replica on a CPU-only machine).
- ``multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG``, as Kubeflow's
  TFJob and every TensorFlow launcher set it. Every worker runs the same command; the chief (task ``chief``, or worker
  0 when the cluster has no chief) alone writes TensorBoard logs, the metrics file and the exported model.

``--batch-size`` is per replica: the input pipeline batches ``batch_size x replicas`` (the global batch) and the
learning rate is scaled by the number of replicas (the linear scaling rule), so one replica trains as before.
In-memory sources (Tux Paint, folders, Fashion-MNIST) are sharded by DATA (each worker reads the pipeline and keeps
its share of every global batch); TFDS's file-backed sources by AUTO (files where there are enough, else data).
``keras.callbacks.BackupAndRestore`` backs the run up after every epoch, so a preempted worker restarted with the
same command resumes at the epoch it had finished.

Keras 3.15's TensorFlow trainer mishandles two reductions under ``MultiWorkerMirroredStrategy`` (the symbolic build
reduces a nest of per-replica batches in one call, and the metrics' mean reduces scalars along axis 0);
:func:`prepare_model` and :func:`make_distribution` correct both, for the multi-worker strategy only.

TensorFlow is imported inside functions: ``glimpse train --help`` stays light.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DISTRIBUTE_MODES",
    "Distribution",
    "backup_dir",
    "is_chief",
    "make_distribution",
    "prepare_model",
    "shard_policy",
    "task_of",
]

DISTRIBUTE_MODES = ("none", "mirrored", "multiworker")


def task_of(tf_config: Mapping[str, Any] | None) -> tuple[str, int]:
    """(task type, index) from a parsed ``TF_CONFIG``; ("worker", 0) without one."""
    task = (tf_config or {}).get("task") or {}
    return str(task.get("type", "worker")), int(task.get("index", 0))


def is_chief(tf_config: Mapping[str, Any] | None) -> bool:
    """The task that writes logs and exports: ``chief``, or worker 0 when the cluster has no chief."""
    kind, index = task_of(tf_config)
    cluster = (tf_config or {}).get("cluster") or {}
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and not cluster.get("chief")


def shard_policy(spec: str) -> str:
    """The tf.data auto-shard policy name for a dataset spec: DATA for in-memory sources, AUTO for TFDS."""
    return "AUTO" if spec.startswith("tfds:") else "DATA"


def backup_dir(logdir: str | Path, run_name: str, task: str) -> Path:
    """Where BackupAndRestore keeps a run's state: stable across restarts (no timestamp), one folder per task so that
    workers sharing a volume never write the same files."""
    return Path(logdir) / "backup" / run_name / task


@dataclass(frozen=True)
class Distribution:
    """A run's strategy (None for ``none``), its replica count, and whether this process is the chief."""

    mode: str
    strategy: Any
    replicas: int
    chief: bool
    task: str  # "worker-0", "chief-0", ...
    workers: int

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def shard(self, dataset: Any, spec: str) -> Any:
        """``dataset`` with the auto-shard policy that fits ``spec`` (unchanged without a strategy)."""
        if self.strategy is None:
            return dataset
        import tensorflow as tf

        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = getattr(tf.data.experimental.AutoShardPolicy,
                                                                    shard_policy(spec))
        return dataset.with_options(options)

    def describe(self, batch_size: int, lr: float) -> dict[str, Any]:
        return {"mode": self.mode, "replicas": self.replicas, "workers": self.workers,
                "per_replica_batch_size": batch_size, "global_batch_size": batch_size * self.replicas,
                "lr_scaled": lr * self.replicas}


def _tf_config() -> dict[str, Any] | None:
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e
    if not isinstance(parsed, dict):
        raise ValueError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    return parsed


def make_distribution(mode: str) -> Distribution:
    """The strategy for ``--distribute MODE``. Call it before any other TensorFlow work in the process: the
    multi-worker strategy configures the collective ops at start-up."""
    if mode not in DISTRIBUTE_MODES:
        raise ValueError(f"unknown --distribute {mode!r}; expected one of {', '.join(DISTRIBUTE_MODES)}")
    if mode == "none":
        return Distribution(mode, None, 1, True, "worker-0", 1)
    if mode == "mirrored":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        return Distribution(mode, strategy, int(strategy.num_replicas_in_sync), True, "worker-0", 1)
    tf_config = _tf_config()
    cluster = (tf_config or {}).get("cluster") or {}
    if not (cluster.get("worker") or cluster.get("chief")) or "task" not in (tf_config or {}):
        raise ValueError("--distribute multiworker needs TF_CONFIG with the cluster (chief and/or worker addresses) "
                         "and this process's task, as a TFJob sets it")
    import tensorflow as tf

    _fix_metric_reduction()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    kind, index = task_of(tf_config)
    workers = len(cluster.get("chief") or []) + len(cluster.get("worker") or [])
    return Distribution(mode, strategy, int(strategy.num_replicas_in_sync), is_chief(tf_config), f"{kind}-{index}",
                        workers)


def prepare_model(model: Any, strategy: Any) -> None:
    """Under a strategy, let Keras build the model's state from one replica's batch (Keras reduces the whole nest of
    per-replica tensors at once, which the multi-worker strategy rejects; only the shapes are needed)."""
    if strategy is None:
        return
    import tensorflow as tf

    def symbolic_build(iterator: Any = None, data_batch: Any = None) -> None:
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, batch)
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = symbolic_build


_fixed = False


def _fix_metric_reduction() -> None:
    """Keras reduces each replica's metric results with ``strategy.reduce("MEAN", v, axis=0)`` under the
    multi-worker strategy; the results are scalars, so the mean across replicas is ``axis=None``. Other strategies
    take Keras' own path."""
    global _fixed
    if _fixed:
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None) if isinstance(v, tf.distribute.DistributedValues)
                else v, values)
        return original(values, strategy, reduction)

    tf_trainer.reduce_per_replica = reduce_per_replica
    _fixed = True


"""Run a SavedModel the way TensorFlow Serving does.

TF Serving loads the MetaGraphDef tagged ``serve`` into a graph session, restores the variables, runs the init op,
and then executes a signature by ``session.run`` on the signature's tensor names. This module does exactly that with
``tf.compat.v1`` (never ``tf.saved_model.load``), so anything it runs, TF Serving runs too.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

from glimpse_wire.contract import SERVE_TAG, SIG_DEFAULT

__all__ = ["SessionModel", "load_session_model"]


@dataclass(frozen=True)
class _Prepared:
    call: Any
    fetch_aliases: tuple[str, ...]


class SessionModel:
    """One loaded model version: its own graph, its own session, its signatures.

    ``run`` feeds and fetches by the signature's tensor names. Callables are prepared once per
    (signature, feed aliases, fetch aliases) and reused; ``tf.compat.v1.Session`` is thread-safe.
    The callables are C++ ``Session::MakeCallable`` handles built from ``CallableOptions`` (feed and fetch
    tensor names), so a run does no Python-side feed conversion or shape check: like TF Serving's
    ``Session::Run``, the graph itself decides what it accepts.
    """

    def __init__(
        self, export_dir: str | Path, *, session_config: Any | None = None, tags: Sequence[str] = (SERVE_TAG,)
    ) -> None:
        self.export_dir = Path(export_dir)
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config)
        try:
            with self.graph.as_default():
                meta_graph = tf.compat.v1.saved_model.loader.load(self.session, list(tags), str(self.export_dir))
        except BaseException:
            self.session.close()
            raise
        self.signature_defs: Mapping[str, Any] = dict(meta_graph.signature_def)
        self._prepared: dict[tuple[str | None, tuple[str, ...], tuple[str, ...]], _Prepared] = {}
        self._lock = threading.Lock()

    def signature(self, name: str | None = None) -> Any:
        """The SignatureDef proto (TensorFlow's own message) of ``name`` (empty/None = ``serving_default``)."""
        return self.signature_defs[name or SIG_DEFAULT]

    def _prepare(self, name: str, feed_aliases: tuple[str, ...], fetch_aliases: tuple[str, ...]) -> _Prepared:
        key = (name, feed_aliases, fetch_aliases)
        prepared = self._prepared.get(key)
        if prepared is None:
            with self._lock:
                prepared = self._prepared.get(key)
                if prepared is None:
                    sig = self.signature(name)
                    options = config_pb2.CallableOptions(
                        feed=[sig.inputs[a].name for a in feed_aliases],
                        fetch=[sig.outputs[a].name for a in fetch_aliases],
                    )
                    # Session.make_callable with a feed_list falls back to Session.run (feed_dict conversion and
                    # Python shape checks); the options-based callable is the C++ one.
                    call = self.session._make_callable_from_options(options)
                    prepared = _Prepared(call, fetch_aliases)
                    self._prepared[key] = prepared
        return prepared

    def run(
        self,
        signature_name: str | None,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run a signature. ``inputs`` maps input aliases to arrays; returns output alias -> array.

        Aliases are assumed valid (the server checks them first and answers with TF Serving's errors).
        """
        name = signature_name or SIG_DEFAULT
        sig = self.signature(name)
        feed_aliases = tuple(sorted(inputs))
        fetch_aliases = tuple(output_filter) if output_filter else tuple(sorted(sig.outputs))
        prepared = self._prepare(name, feed_aliases, fetch_aliases)
        values = prepared.call(*[np.asarray(inputs[a]) for a in feed_aliases])
        return dict(zip(prepared.fetch_aliases, values, strict=True))

    def _prepare_tensors(self, feeds: tuple[str, ...], fetches: tuple[str, ...]) -> _Prepared:
        key = (None, feeds, fetches)
        prepared = self._prepared.get(key)
        if prepared is None:
            with self._lock:
                prepared = self._prepared.get(key)
                if prepared is None:
                    options = config_pb2.CallableOptions(feed=list(feeds), fetch=list(fetches))
                    prepared = _Prepared(self.session._make_callable_from_options(options), fetches)
                    self._prepared[key] = prepared
        return prepared

    def run_tensors(self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str]) -> dict[str, np.ndarray]:
        """One ``Session::Run`` by tensor names (MultiInference feeds one tensor to several inputs this way)."""
        names = tuple(sorted(feeds))
        prepared = self._prepare_tensors(names, tuple(fetches))
        values = prepared.call(*[np.asarray(feeds[n]) for n in names])
        return dict(zip(prepared.fetch_aliases, values, strict=True))

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> SessionModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_session_model(export_dir: str | Path, **kwargs: Any) -> SessionModel:
    """Load one version directory (``.../<name>/<version>``) the way TF Serving does."""
    return SessionModel(export_dir, **kwargs)

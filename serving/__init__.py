"""A TensorFlow-Serving-compatible model server (``glimpse serve``) and the TF Serving container launcher.

Modules: ``config`` (flags and config files), ``session`` (TF Serving's session execution), ``tflite``
(``--prefer_tflite_model`` models), ``manager`` (versions, policies, retries, labels, polling), ``batching``,
``service`` (the RPC semantics), ``grpc_service`` and ``rest`` (transports), ``monitoring``, ``server`` (assembly
and lifecycle), ``cli`` (tensorflow_model_server's flags), ``docker_launch``, ``bench``.
Importing the package imports nothing heavy.
"""

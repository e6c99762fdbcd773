"""A TensorFlow-Serving-compatible model server (``glimpse serve``) and the TF Serving container launcher.

Modules: ``config`` (flags and config files), ``session`` (TF Serving's session execution), ``manager`` (versions,
policies, labels, polling), ``batching``, ``service`` (the RPC semantics), ``grpc_service`` and ``rest``
(transports), ``monitoring``, ``server`` (assembly and lifecycle), ``cli``, ``docker_launch``, ``bench``.
Importing the package imports nothing heavy.
"""

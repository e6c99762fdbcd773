"""The TensorFlow-free wire package: the model contract, TensorProto <-> numpy, the gRPC client, the error table.

Modules (import them directly; this package imports nothing):

- ``contract``: signature names, tensor aliases, explanation method parameters.
- ``messages``: TF Serving's messages (our own proto packages, wire-compatible) and method paths.
- ``tensors``: ``to_tensor_proto`` / ``to_numpy``.
- ``errors``: ``ServingError`` and its subclasses, the gRPC code -> HTTP status table.
- ``examples``: tf.Example and TFRecord files.
- ``client``: ``ServingClient``.
- ``booleans``: ``parse_bool``, the one boolean word parser of flags, queries and forms.
"""

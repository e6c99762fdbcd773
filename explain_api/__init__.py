"""The explain API: predictions and explanations of served image classifiers over HTTP (Flask, no TensorFlow).

``create_app(config, client=None)`` in ``explain_api.app`` builds the WSGI app; ``glimpse api`` runs it under gunicorn.
It imports only ``glimpse_wire`` (the model contract and the gRPC client) and ``rendering`` (pictures and videos).

- ``app`` (the factory and request hooks), ``context`` (the state the views share), one blueprint per module:
  ``models``, ``video_routes``, ``page``, ``ops``; ``parsing`` and ``payloads`` read requests and write answers.
- ``service`` (model discovery, predictions, explanations), ``occlusion`` (the black-box occlusion maths), ``video``
  (frame-by-frame explaining and ``glimpse explain-video``): the domain, which raises ``exceptions``.
- ``errors``: the one table from domain errors to HTTP statuses; ``config``: the one ``ApiConfig``.
- ``bodies`` (the body limit for every framing), ``budget`` (the memory the requests in flight may hold together),
  ``allocator`` (glibc's arenas and mmap threshold in each worker): what keeps a worker's memory bounded.
"""

__all__: list[str] = []

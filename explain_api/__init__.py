"""The explain API: predictions and explanations of served image classifiers over HTTP (Flask, no TensorFlow).

``create_app(config, client=None)`` in ``explain_api.app`` builds the WSGI app; ``glimpse api`` runs it under gunicorn.
"""

__all__: list[str] = []

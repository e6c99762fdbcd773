"""Training: data, models, the one fit path and the exporter that writes the model contract.

``training.fit`` holds ``TrainConfig`` (the only record of training parameters), ``default_image_size`` and ``fit``
(config and data in, fitted model and history out), which ``glimpse train`` (``training.train``) and the studies
above this package all call. ``training.export`` writes the versioned SavedModel that serving executes. Nothing here
imports the studies, serving, explain_api, whatif or the CLI package.
"""

"""Pictures in and out, without TensorFlow and without HTTP: the layer beside ``glimpse_wire``.

- ``rendering.images``: decode and validate uploads (Pillow), the model's ``resize_with_pad`` geometry, PNG/JPEG.
- ``rendering.render``: colormaps, heatmap overlays at the original size, grids, activation sheets.
- ``rendering.video``: read a clip's frames (ffmpeg from ``imageio-ffmpeg``, Pillow for GIF), write MP4/GIF, captions.
- ``rendering.errors``: the exception types of all three; callers map them to HTTP statuses or exit codes.

The package imports no other package of the project, so the explain API, the studies and anything else may use it.
"""

from __future__ import annotations

__all__: list[str] = []

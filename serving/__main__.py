"""``python -m serving``: the same server as ``glimpse serve`` (tensorflow_model_server's flags)."""

from serving.cli import main

raise SystemExit(main())

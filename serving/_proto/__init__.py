"""Generated protobuf modules (``python -m serving._regen``). Do not edit."""

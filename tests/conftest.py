"""Shared fixtures. Keras must see its backend before its first import."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "numpy")

"""Shared pytest setup: Triton's CPU interpreter (must be set before triton is imported), repo root on sys.path,
and a modest thread count (the test machine's cores are shared)."""
import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

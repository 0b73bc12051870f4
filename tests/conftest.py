"""Shared pytest setup: repo root on sys.path, a modest thread count (the test machine's cores are
shared), and Triton's CPU interpreter where there is no GPU (it must be chosen before triton is
imported). On a CUDA machine the kernels are compiled and tested for real: the interpreter is never
forced there."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402  (importing torch does not import triton)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(min(2, torch.get_num_threads()))

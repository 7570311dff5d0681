#!/usr/bin/env python3
"""Runs Kyutai's `moshi.server` (moshi==0.2.13) on the CPU, unchanged except for one thing: its
warm-up ends with `torch.cuda.synchronize()`, which fails without an NVIDIA driver, so that call is
made a no-op first. Every argument is passed to moshi.server as given.

Run with the reference venv: tools/reference/.venv/bin/python tools/interop/run_moshi_server.py --device cpu ...
"""
import runpy
import sys

import torch

torch.cuda.synchronize = lambda *args, **kwargs: None
sys.argv = ["moshi.server"] + sys.argv[1:]
runpy.run_module("moshi.server", run_name="__main__")

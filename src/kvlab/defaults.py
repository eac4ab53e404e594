"""Defaults and option choices that the command line shows before anything heavy is imported.

This module imports nothing: ``kvlab --help`` and argument errors answer without loading torch. The
modules that implement these options re-export them (``engine.DEFAULT_CHUNK_SIZE``,
``decoding.DECODE_MODES``, ``decode_kernel.KERNELS``).
"""

DEFAULT_CHUNK_SIZE = 4096  # prompt tokens per prefill chunk; the method compresses between chunks
DECODE_MODES = ("auto", "eager", "static", "graph", "compiled")  # how the decoding step runs
DECODE_KERNELS = ("matmul", "flex", "inductor")  # decode attention of the static modes (KVLAB_DECODE_ATTENTION)

"""Every registered method with the parameters the tests run it with.

Adding a method adds one line here; ``test_matrix_covers_registry`` fails until it is added.
"""

METHOD_CASES: dict[str, dict] = {
    "full": {},
    "streaming_llm": {"n_sink": 4},
    "snapkv": {"window_size": 8},
    "pyramidkv": {"window_size": 8, "beta": 4},
    "h2o": {},
    "tova": {},
    "knorm": {},
    "adakv": {},
    "a_shape": {"n_init": 4, "n_local": 16, "kernel": "blocked"},
    "lm_infinite": {"n_global": 4, "n_local": 16, "limit_distance": 16, "kernel": "blocked"},
    "minference": {"last_q": 8, "vertical_size": 8, "slash_size": 16, "block_size": 8, "sink_tokens": 4,
                   "local_diagonals": 8, "kernel": "blocked"},
}

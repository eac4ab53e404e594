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
}

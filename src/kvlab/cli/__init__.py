"""The ``kvlab`` command line. Each subcommand lives in its own module (``kvlab/cli/<name>.py``)
exposing ``add_parser(subparsers)`` and ``run(args) -> int``; :mod:`kvlab.cli.main` finds them."""

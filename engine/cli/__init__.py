"""The `acd` command line: `main` parses the arguments and runs one subcommand.

How this works: `main.py` holds the argument parser and the daemon-side commands (run,
check-config, export, precompile, version); the operator commands that talk to a running daemon's
API are in `operator.py`, the simulator and Erlang calculator in `simulate.py`, recordings
maintenance in `recordings.py`. Those three are imported only when their command runs, so `acd run`
does not pay for them.
"""

from engine.cli.main import main

__all__ = ["main"]

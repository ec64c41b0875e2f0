"""The one error a bad configuration raises: it names the file, the key path and the problem."""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration file is unreadable, not TOML, or does not describe a valid daemon.

    The message is meant for an operator: ``<file>: <key path>: expected ..., found ...``. It is never
    raised for a valid file; a config that loads is complete (every default filled in).
    """

    def __init__(self, file: str, key_path: str, problem: str) -> None:
        self.file = file
        self.key_path = key_path
        self.problem = problem
        where = f"{file}: {key_path}" if key_path else file
        super().__init__(f"{where}: {problem}")

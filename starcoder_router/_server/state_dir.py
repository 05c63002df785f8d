"""Where `starcoder-router serve` keeps its state when the config names no `[store]`: a SQLite
spend database in a state directory, so that a restart remembers the day's spend and the
workers of `--workers N` share one set of budgets.

The directory is the first of: `serve --state-dir DIR`, `[server] state_dir`,
`$STARCODER_ROUTER_STATE_DIR`, `$XDG_STATE_HOME/starcoder-router`,
`~/.local/state/starcoder-router` (the XDG Base Directory specification's default for state,
https://specifications.freedesktop.org/basedir-spec/latest/). It is created readable by its
owner only (0700): the ledger names tenants and what they spent.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from .._errors import ConfigError

__all__ = ["SPEND_FILE", "default_state_dir", "open_default_store", "prepare_state_dir",
           "spend_path"]

SPEND_FILE = "spend.db"


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """The state directory when neither the flag nor `[server] state_dir` names one."""
    env = os.environ if env is None else env
    explicit = env.get("STARCODER_ROUTER_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_STATE_HOME")
    # The specification says a relative XDG path is invalid and is to be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "starcoder-router"
    return Path.home() / ".local" / "state" / "starcoder-router"


def spend_path(state_dir: str | os.PathLike[str] | None) -> Path:
    """The spend database inside `state_dir` (default: `default_state_dir()`)."""
    base = Path(state_dir).expanduser() if state_dir else default_state_dir()
    return base / SPEND_FILE


def prepare_state_dir(state_dir: str | os.PathLike[str] | None) -> Path:
    """Create the state directory (0700, parents as needed) and return the spend database's
    path; `ConfigError` when it cannot be made or is not a directory."""
    path = spend_path(state_dir)
    directory = path.parent
    try:
        # mkdir's mode is filtered by the umask; a fresh directory is then set to 0700 exactly.
        existed = directory.is_dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not existed:
            os.chmod(directory, stat.S_IRWXU)
    except OSError as exc:
        raise ConfigError(f"cannot create the state directory {str(directory)!r}: "
                          f"{exc.strerror or exc}", field="server.state_dir") from exc
    return path


def open_default_store(state_dir: str | os.PathLike[str] | None) -> Path:
    """Prepare the state directory and create (or check) its spend database once, so that a
    file that cannot be opened is reported before the gateway starts; returns its path."""
    import sqlite3

    from .._stores.sqlite import SQLiteStore

    path = prepare_state_dir(state_dir)
    try:
        SQLiteStore(path).close()
    except (sqlite3.Error, ValueError) as exc:
        raise ConfigError(f"cannot open the spend database {str(path)!r}: {exc}",
                          field="server.state_dir") from exc
    return path

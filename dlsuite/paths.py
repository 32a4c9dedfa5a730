"""Names that become path segments (a study's report folder, a generated study file) stay in their folder.

A study named ``../../../evil_study`` once wrote its report above the working folder. Every name a user
gives that the suite turns into a file or folder name goes through :func:`safe_segment`, which refuses
(rather than silently renames) anything that is not one plain path segment. Paths the user gives as
paths (``--out``, ``--storage``, ``tracking.uri``) are theirs to point anywhere and are not checked here.
"""

from __future__ import annotations

from dlsuite.errors import ConfigError

MAX_BYTES = 200  # file systems allow 255 bytes a name; leave room for suffixes such as ".yaml"
ALLOWED = "one path segment: no '/', '\\', control characters or NUL, not '.' or '..', at most 200 bytes"


def segment_problem(name: object) -> str | None:
    """Why ``name`` cannot be used as one path segment, or None when it can."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not text"
    if not name.strip():
        return "it is empty"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if name in (".", ".."):
        return "it names a folder itself"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it contains a control character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        return f"it is longer than {MAX_BYTES} bytes"
    return None


def safe_segment(name: object, what: str) -> str:
    """Return ``name`` if it is a single, plain path segment; else raise a ConfigError naming ``what``.

    Args:
        name: the user's name (a study name, a variant name, ...).
        what: what the name is, for the message (``"study name"``).
    """
    problem = segment_problem(name)
    if problem:
        raise ConfigError(f"{what} {name!r} cannot name a file or folder ({problem}); use {ALLOWED}")
    assert isinstance(name, str)
    return name

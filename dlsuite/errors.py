"""Errors a user can act on.

Anything raised as a :class:`DlsuiteError` is printed by the CLI as one readable line and exits with
code 2; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable


class DlsuiteError(Exception):
    """A user-facing error: bad config, unknown name, missing data. The CLI exits 2 on it."""


class ConfigError(DlsuiteError):
    """The run or study configuration is invalid."""


class DataError(DlsuiteError):
    """A dataset cannot be found or read."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def refuse_unknown(
    given: Iterable[str], valid: Collection[str], owner: str, shown: str = "{!r}", *, option: bool = False
) -> None:
    """Raise :class:`ConfigError` for the first of ``given`` not in ``valid``, naming the closest and all valid.

    ``owner`` says whose keys they are (``"loss 'focal'"``), ``shown`` how a key is written
    (``"task.loss_args.{}"``); ``option`` words it ``has no option`` / ``its options`` rather than
    ``does not take`` / ``it takes``.
    """
    verb, listing = ("has no option", "its options") if option else ("does not take", "it takes")
    for key in given:
        if key not in valid:
            hint = did_you_mean(key, valid)
            raise ConfigError(f"{owner} {verb} {shown.format(key)}{hint}; {listing}: {', '.join(valid) or '(none)'}")

"""The one exception type for user mistakes: the CLI prints it without a traceback and exits 1.

The library never spells a command-line flag. Where a message should say which setting fixes the
mistake, it names the library's parameter through ``option("skip_bad_images")``: Python callers
read the parameter's name, and the CLI shows its own flag for it.
"""

from __future__ import annotations

import re
from typing import Callable

_OPTION = re.compile(r"\u27e8([a-z_]+)\u27e9")  # ⟨name⟩


def option(name: str) -> str:
    """A library parameter named inside a UserError message (see the module docstring)."""
    return f"\u27e8{name}\u27e9"


def spell_options(text: str, spell: Callable[[str], str] = lambda name: name) -> str:
    """``text`` with each ``option(name)`` spelled by ``spell``; for messages that are not errors (notes, warnings)."""
    return _OPTION.sub(lambda m: spell(m[1]), text)


class UserError(Exception):
    """Bad input the user can fix: say which file or record, what is wrong and what to do."""

    def render(self, spell: Callable[[str], str] = lambda name: name) -> str:
        """The message with each ``option(name)`` spelled by ``spell`` (the CLI: as its flag)."""
        return spell_options(super().__str__(), spell)

    def __str__(self) -> str:
        return self.render()

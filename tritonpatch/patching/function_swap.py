"""Swapping module-level functions and methods for wrappers while patches are active, then back by identity.

Several patches may be active at once (two models, two threads), so a swap is reference-counted: the
first user installs the wrappers, the last one to leave puts back the very objects that were there.
"""
from __future__ import annotations

import threading
from typing import Any

_MISSING = object()


class FunctionSwap:
    """A set of ``(owner, attribute name, wrapper)`` swaps installed and removed together.

    ``original(key)`` gives the object that was in place when the swap was installed (``key`` is
    ``"<owner name>.<attribute>"``), for the wrappers to call.
    """

    def __init__(self, swaps: list[tuple[Any, str, Any]]) -> None:
        self._swaps = swaps
        self._lock = threading.Lock()
        self._users = 0
        self._saved: dict[str, Any] = {}
        self._originals: dict[str, Any] = {self.key(o, n): getattr(o, n) for o, n, _ in swaps}

    @staticmethod
    def key(owner: Any, name: str) -> str:
        return f"{getattr(owner, '__name__', type(owner).__name__)}.{name}"

    def original(self, key: str) -> Any:
        """The object the wrapper for ``key`` stands in for."""
        return self._originals[key]

    def acquire(self) -> None:
        """One more user: install the wrappers if this is the first."""
        with self._lock:
            if self._users == 0:
                for owner, name, wrapper in self._swaps:
                    key = self.key(owner, name)
                    # What is there now, and whether it was the owner's own attribute or inherited.
                    self._saved[key] = owner.__dict__.get(name, _MISSING)
                    self._originals[key] = getattr(owner, name)
                    setattr(owner, name, wrapper)
            self._users += 1

    def release(self) -> None:
        """One user fewer: the last one puts the original objects back."""
        with self._lock:
            self._users -= 1
            if self._users == 0:
                for owner, name, _ in self._swaps:
                    saved = self._saved.pop(self.key(owner, name))
                    if saved is _MISSING:
                        delattr(owner, name)
                    else:
                        setattr(owner, name, saved)

    @property
    def installed(self) -> bool:
        return self._users > 0

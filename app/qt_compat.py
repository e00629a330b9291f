"""Keep PySide6 builds that assume Python 3.12's immortal None/True/False from crashing 3.10/3.11.

PySide6 6.12's wheels return ``None``, ``True`` and ``False`` without the reference they owe (on
Python 3.12 and later these objects are immortal, so nothing is owed there). On older Pythons
every ``label.setText(...)``, ``timer.start()`` or ``signal.emit(...)`` then takes one reference
away for good, and after a few tens of thousands of calls Python frees ``None`` and aborts
("none_dealloc: deallocating None"). ``protect_singletons`` detects that leak with a probe and,
only when it is there, gives those three objects references enough for any session, which is
what Python 3.12 does by making them immortal.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject

# 2**40 references: a session would need a trillion leaking calls to use them up.
_SPARE_REFERENCES = 1 << 40


def _leaks_none() -> bool:
    probe = QObject()
    calls = 64
    before = sys.getrefcount(None)
    for _ in range(calls):
        probe.setObjectName("probe")
    lost = before - sys.getrefcount(None)
    _give(None, max(0, lost))  # what the probe itself took
    return lost >= calls


def _give(value: object, count: int) -> None:
    for _ in range(count):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(value))


def protect_singletons() -> bool:
    """Give None, True and False spare references if PySide6 leaks them; return True if so."""
    if sys.version_info >= (3, 12) or not _leaks_none():
        return False
    for value in (None, True, False):
        if hasattr(sys, "getobjects"):  # a Py_TRACE_REFS build has another object layout
            _give(value, 1 << 20)
        else:
            # ob_refcnt is the first field of every object in CPython's release builds.
            ctypes.c_ssize_t.from_address(id(value)).value += _SPARE_REFERENCES
    return True


PROTECTED = protect_singletons()

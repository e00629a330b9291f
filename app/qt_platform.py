"""Whether Qt can open the app's window here, checked before Qt starts.

Qt aborts the process (a core dump, exit 134) when its platform plugin cannot load: a system
library it links is missing, or there is no display to connect to. Both are checked here
first, cheaply (``dlopen`` of each library, one connection to the X server), so the app can
say in one line what to install or which variable to set. Nothing here imports Qt's GUI.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

# The system libraries PySide6's Qt links on Linux (the wheel bundles Qt itself, not these),
# with the Debian/Ubuntu package that provides each. Read from the ELF NEEDED entries of
# libQt6Gui, libQt6Widgets, libQt6DBus and the platform plugins of PySide6 6.12.
GUI_LIBRARIES = {  # every platform, offscreen included (QtGui links them)
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libX11.so.6": "libx11-6",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libglib-2.0.so.0": "libglib2.0-0",
}
XCB_LIBRARIES = {  # the xcb platform (a window on an X server) and the desktop's D-Bus
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libdbus-1.so.3": "libdbus-1-3",
}
WAYLAND_LIBRARIES = {
    "libwayland-client.so.0": "libwayland-client0",
    "libwayland-cursor.so.0": "libwayland-cursor0",
}
# Every package a window needs, for the docs and for `apt-get install` in CI.
DEBIAN_PACKAGES = tuple(sorted({**GUI_LIBRARIES, **XCB_LIBRARIES}.values()))
CONNECT_TIMEOUT_S = 5.0

WITHOUT_A_WINDOW = ("or run without a window: QT_QPA_PLATFORM=offscreen mlx-inception-app "
                    "IMAGE --screenshot OUT.png")


def loads(library: str) -> bool:
    """Return True if the dynamic linker can load ``library`` (a soname or a path)."""
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def x_display_problem(display: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Return why the X server of ``display`` cannot be reached, or None when it answers.

    Connects as Qt will, through libxcb (with the user's X authority), in a thread so that a
    server that never answers costs ``timeout`` seconds, not a hang.
    """
    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return "libxcb.so.1 is missing"
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    outcome: dict[str, int] = {}

    def connect() -> None:
        connection = xcb.xcb_connect(display.encode(), None)
        outcome["error"] = xcb.xcb_connection_has_error(connection)
        xcb.xcb_disconnect(connection)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if "error" not in outcome:
        return f"the X display {display} did not answer within {timeout:g} s"
    if outcome["error"]:
        return f"cannot connect to the X display {display} (DISPLAY)"
    return None


def plugin_path(name: str) -> Path | None:
    """Return PySide6's platform plugin ``name`` (e.g. "xcb"), or None if it has none."""
    import PySide6  # the package only: no Qt library is loaded by this

    for folder in PySide6.__path__:
        path = Path(folder) / "Qt" / "plugins" / "platforms" / f"libq{name}.so"
        if path.exists():
            return path
    return None


def _missing(libraries: Mapping[str, str], load: Callable[[str], bool]) -> str | None:
    absent = [soname for soname in libraries if not load(soname)]
    if not absent:
        return None
    packages = " ".join(dict.fromkeys(libraries[soname] for soname in absent))
    return (f"Qt needs system libraries that are missing ({', '.join(absent)}): "
            f"sudo apt-get install {packages} (Debian/Ubuntu)")


def _window_problem(platform: str, environ: Mapping[str, str], load: Callable[[str], bool],
                    reach: Callable[[str], str | None],
                    plugin: Callable[[str], Path | None]) -> str | None:
    """Return why ``platform`` ("xcb" or "wayland") cannot open a window, or None."""
    if platform == "wayland":
        missing = _missing(WAYLAND_LIBRARIES, load)
        if missing:
            return missing
        if not environ.get("WAYLAND_DISPLAY"):
            return "no Wayland display (WAYLAND_DISPLAY is not set)"
        return None
    missing = _missing(XCB_LIBRARIES, load)
    if missing:
        return missing
    display = environ.get("DISPLAY", "")
    if not display:
        return ("no display to open a window on (DISPLAY is not set): start the app in a "
                "desktop session, over ssh -X or under xvfb-run")
    unreachable = reach(display)
    if unreachable:
        return unreachable
    # Anything the table above does not name: the plugin itself, loaded as Qt will load it,
    # with the dynamic linker's one-line reason when it fails.
    path = plugin(platform)
    if path is not None:
        try:
            ctypes.CDLL(str(path))
        except OSError as error:
            return f"Qt's {platform} platform plugin cannot load: {error}"
    return None


def platform_problem(
    environ: Mapping[str, str] | None = None,
    load: Callable[[str], bool] = loads,
    reach: Callable[[str], str | None] = x_display_problem,
    plugin: Callable[[str], Path | None] = plugin_path,
    system: str = sys.platform,
) -> str | None:
    """Return one line saying why Qt cannot start here (what to install or set), or None.

    Follows ``QT_QPA_PLATFORM`` as Qt does ("wayland;xcb" tries each in turn); unset, Qt opens
    a window through xcb, or Wayland where a Wayland display is set. macOS and Windows always
    have their platform; platforms this does not know (eglfs, vnc, ...) are left to Qt.
    """
    if not system.startswith("linux"):
        return None
    environ = os.environ if environ is None else environ
    missing = _missing(GUI_LIBRARIES, load)
    if missing:
        return missing
    requested = [part.split(":")[0].strip()
                 for part in environ.get("QT_QPA_PLATFORM", "").split(";") if part.strip()]
    if not requested:
        requested = ["wayland", "xcb"] if environ.get("WAYLAND_DISPLAY") else ["xcb"]
    problems = []
    for platform in requested:
        if platform not in ("xcb", "wayland"):
            return None  # offscreen and minimal need nothing more; others are Qt's to judge
        problem = _window_problem(platform, environ, load, reach, plugin)
        if problem is None:
            return None
        problems.append(problem)
    return "; ".join(dict.fromkeys(problems)) + f"; {WITHOUT_A_WINDOW}"

"""``mlx-inception-app [IMAGE] [--weights SOURCE] [--module NAME] [--screenshot OUT.png]``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence

import mlx_inception  # (loads the fast BLAS before anything imports mlx.core)
from mlx_inception.inference.gradcam import DEFAULT_LAYER

from .qt_platform import platform_problem

SCREENSHOT_TIMEOUT_S = 300
# How long the process may stay (windowless) after the last window closed, for the worker to
# finish the job it is in; a job inside MLX takes seconds, a download is stopped at its next
# chunk. Past this, something hangs (a dead connection): exit without waiting.
EXIT_GRACE_S = 60


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlx-inception-app",
        description="Classify any image with Inception-v3 and look inside every module and "
        "branch: channel grids, branch shares, Grad-CAM.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("image", nargs="?", help="image file to open")
    parser.add_argument(
        "--weights",
        help="registry name (e.g. inception_v3.tv_in1k), Hub repo id, converted folder, "
        ".pth/.safetensors file, or 'random'; by default the last used weights or the cached "
        "default, else a randomly initialised network",
    )
    parser.add_argument("--module", default=DEFAULT_LAYER,
                        help="module to show first (Conv2d_1a_3x3 .. Mixed_7c, AuxLogits)")
    parser.add_argument(
        "--screenshot",
        metavar="OUT.png",
        help="render the whole window to this PNG once every result is drawn, then exit "
        "(works with QT_QPA_PLATFORM=offscreen)",
    )
    parser.add_argument(
        "--layout",
        metavar="OUT.json",
        help="with --screenshot: also write where the window and every widget of each panel "
        "lie on the screen and, on a real screen, the whole screen as OUT.screen.png",
    )
    parser.add_argument("--size", help="window size WIDTHxHEIGHT (the screenshot's size); by "
                        "default as last closed, else 1600x1000, within the screen's free area")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {mlx_inception.__version__}")
    return parser


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"error: --size must be WIDTHxHEIGHT, not {text!r}") from None
    return width, height


def _has_application() -> bool:
    """Return True if this process runs a Qt application already (the tests' own)."""
    gui = sys.modules.get("PySide6.QtGui")
    return gui is not None and gui.QGuiApplication.instance() is not None


def _report_exceptions_in(window) -> None:
    """Show any exception a Qt slot raises in the window's error line instead of losing it."""
    previous = sys.excepthook

    def hook(kind, error, trace) -> None:
        previous(kind, error, trace)  # the traceback still goes to stderr
        try:
            window.show_error(f"internal error: {kind.__name__}: {error}")
        except RuntimeError:  # the window is already gone
            pass

    sys.excepthook = hook


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    size = _parse_size(args.size) if args.size else None
    if args.image and not os.path.exists(os.path.expanduser(args.image)):
        print(f"error: {args.image}: no such file", file=sys.stderr)
        return 1
    if not _has_application():
        # Qt aborts the process (a core dump) when its platform cannot load: say why first.
        problem = platform_problem()
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1

    from PySide6.QtCore import QSettings, QSize
    from PySide6.QtWidgets import QApplication

    from .geometry import place
    from .window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("mlx-inception-app")
    app.setOrganizationName("mlx-inception")
    app.setStyle("Fusion")
    settings = None
    if args.screenshot:
        # A screenshot must not depend on (or change) the user's recent files and weights.
        scratch = tempfile.TemporaryDirectory(prefix="mlx-inception-app-")
        settings = QSettings(os.path.join(scratch.name, "settings.ini"),
                             QSettings.Format.IniFormat)
    window = MainWindow(weights=args.weights, module=args.module, settings=settings)
    if size is not None:
        place(window, window.settings, QSize(*size))
    _report_exceptions_in(window)
    window.show()
    if args.image:
        window.open_path(args.image)

    if not args.screenshot:
        return _exit(window, app.exec())

    outcome = {"code": 1}

    def capture() -> None:
        try:
            saved = window.export_png(args.screenshot, "window")
        except OSError as error:
            print(f"error: cannot write {args.screenshot}: {error}", file=sys.stderr)
        else:
            if args.layout:
                write_layout(window, args.layout)
            if window.last_error:
                print(f"error: {window.last_error}", file=sys.stderr)
            else:
                outcome["code"] = 0
            print(f"saved {saved}")
        window.close()
        app.quit()

    def timed_out() -> None:
        print(f"error: results not ready after {SCREENSHOT_TIMEOUT_S} s", file=sys.stderr)
        window.close()
        app.quit()

    # Keep a reference: the timer must live until it fires.
    _timer = wait_until_settled(window, capture, SCREENSHOT_TIMEOUT_S * 1000, timed_out)  # noqa: F841
    app.exec()
    return _exit(window, outcome["code"])


def write_layout(window, path: str) -> None:
    """Write ``window``'s layout report to ``path`` (JSON) and, on a real screen, the whole
    screen as grabbed beside it (``.screen.png``)."""
    import json
    from pathlib import Path

    from PySide6.QtGui import QGuiApplication

    from mlx_inception.atomic import write_text_atomically

    from .geometry import WINDOWLESS, layout_report

    report = layout_report(window, window.panels)
    report["title"] = window.windowTitle()
    report["predictions"] = [bar.label for bar in window.predictions_panel.bars.bars()]
    if QGuiApplication.platformName() not in WINDOWLESS:
        # Paint now and wait for the window system to have drawn it: a grab taken while repaints
        # are still queued (a loaded machine) shows panels half drawn.
        window.repaint()
        QGuiApplication.processEvents()
        QGuiApplication.sync()
        grab = Path(path).with_suffix(".screen.png")
        if window.screen().grabWindow(0).save(str(grab), "PNG"):
            report["screen_grab"] = str(grab)
    write_text_atomically(path, json.dumps(report, indent=1))


def wait_until_settled(window, callback, timeout_ms: int, on_timeout):
    """Call ``callback()`` once ``window`` has drawn every result, or ``on_timeout()``."""
    from PySide6.QtCore import QTimer

    timer = QTimer(window)
    elapsed = {"ms": 0}
    interval = 100

    def check() -> None:
        elapsed["ms"] += interval
        if window.is_settled() and window.info is not None:
            timer.stop()
            callback()
        elif elapsed["ms"] >= timeout_ms:
            timer.stop()
            on_timeout()

    timer.timeout.connect(check)
    timer.start(interval)
    return timer


def _exit(window, code: int) -> int:
    """Return ``code`` once the worker's threads have ended, or leave at once after the grace.

    The window is gone, so waiting shows nothing. The threads must end before the interpreter
    tears MLX down (a thread inside MLX then aborts the process); one that does not end within
    ``EXIT_GRACE_S`` is left behind by ``os._exit``, which runs no teardown at all.
    """
    window.settings.sync()
    window.worker.shutdown()
    if window.worker.wait(EXIT_GRACE_S):
        return code
    print(f"warning: work still running {EXIT_GRACE_S} s after the window closed; "
          "exiting without it", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())

"""``git coral …``: a thin typer app over the library. Errors become one line on stderr."""

from __future__ import annotations

import errno
import importlib
import os
import pkgutil
import sys

FAST = {"filter-process", "clean", "smudge"}


def _app():
    import typer

    from . import __version__, commands

    app = typer.Typer(
        name="git-coral",
        help="coral-git: git for neural-network weights. Run 'git coral COMMAND -h' for a command's help.",
        context_settings={"help_option_names": ["-h", "--help"]},
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.command()
    def version() -> None:
        """Print the coral-git version."""
        print(__version__)

    for mod in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
    return app


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(Exit, Abort, ClickException) classes of click and of typer (>= 0.20 vendors click as typer._click)."""
    import click

    exits: list[type] = [click.exceptions.Exit]
    aborts: list[type] = [click.exceptions.Abort]
    errors: list[type] = [click.ClickException]
    try:
        import typer
        from typer import _click  # type: ignore[attr-defined]

        exits.append(typer.Exit)
        aborts.append(typer.Abort)
        errors.append(_click.exceptions.ClickException)
    except (ImportError, AttributeError):
        pass
    return tuple(exits), tuple(aborts), tuple(errors)


def make_fetcher(repo):
    """The remote fetcher for smudge, imported on the first missing chunk: the remote modules (HTTP,
    S3 signing) would cost every filter start-up, and most sessions never fetch."""
    fetcher = None

    def fetch(ids: list[str]) -> None:
        nonlocal fetcher
        if fetcher is None:
            from .remote.fetch import make_fetcher as real

            fetcher = real(repo)
        fetcher(ids)

    return fetch


def main(argv: list[str] | None = None) -> int:
    """Console entry point of ``git-coral``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from .errors import CoralError

    try:
        if argv and argv[0] in FAST:
            # the filters use no BLAS: without this, OpenBLAS's threads started by numpy's import spin
            # ~40 ms of CPU per start, taken from the chunk decoders on a 2-core machine
            os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
            from .filter import process as gitfilter

            if argv[0] == "filter-process":
                return gitfilter.filter_process(make_fetcher)
            return gitfilter.single(argv[0], argv[1] if len(argv) > 1 else "", make_fetcher)
        exits, aborts, click_errors = _click_exceptions()
        try:
            rv = _app()(args=argv, prog_name="git-coral", standalone_mode=False)
        except exits as exc:
            return exc.exit_code
        except aborts:
            print("aborted", file=sys.stderr)
            return 1
        except click_errors as exc:
            exc.show()
            return exc.exit_code
        return rv if isinstance(rv, int) else 0
    except CoralError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if os.environ.get("CORAL_DEBUG"):
            raise
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        # a path the user (or git) named cannot be read: a user error, not a bug
        if os.environ.get("CORAL_DEBUG"):
            raise
        print(f"error: cannot open {exc.filename!r}: {exc.strerror}", file=sys.stderr)
        return 1
    except OSError as exc:
        if os.environ.get("CORAL_DEBUG") or exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        # the machine, not coral: a full disk or a read-only file system
        print(f"error: {exc.strerror}; free space (or make the store writable) and run the command again", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug, not a user error: still one line unless debugging
        if os.environ.get("CORAL_DEBUG"):
            raise
        print(f"error: internal error ({type(exc).__name__}: {exc}); rerun with CORAL_DEBUG=1 for details", file=sys.stderr)
        return 1


def run() -> None:
    sys.exit(main())

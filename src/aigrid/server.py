"""Running a server: load the config, print where it listens, show the models loading, run uvicorn."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from uvicorn.config import STARTUP_FAILURE

from aigrid.api.app import admin_key, create_app
from aigrid.config import load_config
from aigrid.grid.backends.base import Backend

if TYPE_CHECKING:
    from aigrid.grid.backends.embedded import EmbeddedBackend

log = logging.getLogger(__name__)
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# llama.cpp reports how far the weights are; the context it makes after them (the KV cache, often
# the longer part) reports nothing, so a model's bar waits just short of full until it is ready.
_WEIGHTS_SHARE = 0.99


class StartDisplay:
    """A terminal's view of a server starting: a bar per deployment as it loads, then the URL."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._whole = self.progress.add_task("starting aigrid", total=None)

    def begin(self) -> None:
        """Show the display; it stays at the bottom of the terminal until ``end``."""
        self.progress.start()

    @contextmanager
    def starting(self, backend: Backend) -> Iterator[None]:
        """Show ``backend`` loading while it starts, with llama.cpp's own progress for an embedded model."""
        name = escape(backend.name)
        task = self.progress.add_task(f"loading {name}", total=None)

        def weights(fraction: float) -> None:
            done = fraction >= 1.0
            self.progress.update(
                task,
                total=1.0,
                completed=min(fraction, 1.0) * _WEIGHTS_SHARE,
                description=f"loading {name}"
                + (" [dim](weights in; making the KV cache)[/]" if done else ""),
            )

        embedded = _embedded(backend)
        if embedded is not None:
            embedded.load_progress = weights
        try:
            yield
        except BaseException:
            self.progress.update(task, description=f"[red]could not load[/] {name}")
            self.progress.stop()
            raise
        finally:
            if embedded is not None:
                embedded.load_progress = None
        self.progress.update(task, total=1.0, completed=1.0, description=f"loading {name}")

    def end(self, url: str | None) -> None:
        """Stop the display, saying where the server answers; ``None`` when it did not start."""
        if url is not None:
            self.progress.update(self._whole, total=1.0, completed=1.0)
        self.progress.stop()
        if url is not None:
            self.console.print(f"[bold green]ready:[/] {escape(url)}", highlight=False)


def _embedded(backend: Backend) -> EmbeddedBackend | None:
    """The backend as an embedded one, which can report its load; llama.cpp is imported only for one."""
    if backend.config.backend != "embedded":
        return None
    from aigrid.grid.backends.embedded import EmbeddedBackend

    return backend if isinstance(backend, EmbeddedBackend) else None


class _Server(uvicorn.Server):
    """uvicorn's server, telling ``on_started`` whether it listens once its start is over."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[bool], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start the app and listen, then report how it went (a failed start exits from here)."""
        try:
            await super().startup(sockets)
        finally:
            self._on_started(self.started)


def serve(config_path: Path | None, host: str, port: int, data_dir: Path, node: str | None = None) -> None:
    """Serve the grid until interrupted; raises ConfigError for an unusable config."""
    config = load_config(config_path)
    # The node's name: --node, else the config's, else this host and port (unique on one host).
    cluster = config.cluster
    name = node or cluster.node or f"{socket.gethostname()}:{port}"
    config = config.model_copy(update={"cluster": cluster.model_copy(update={"node": name})})
    data_dir.mkdir(parents=True, exist_ok=True)
    key = admin_key(data_dir)
    console = Console(stderr=True)
    # Off a terminal (a log file, a pipe) there is nothing to redraw: log lines only.
    display = StartDisplay(console) if console.is_terminal else None
    if display is None:
        logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
    else:
        # Through the console, log lines appear above the live display rather than across it.
        handler = RichHandler(console=console, show_path=False, markup=False)
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", handlers=[handler])
    # Every HTTP request these clients make (to MCP services, upstreams) is not news for an operator.
    for chatty in ("alembic", "httpx", "httpx2"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    url = f"http://{host}:{port}/v1"
    names = ", ".join(n for m in config.models for n in (m.name, *m.aliases))
    console.print(f"[bold]aigrid[/bold] serving {names}")
    console.print(f"  URL:       {url}")
    console.print(f"  admin key: {key}")
    console.print(f"  data dir:  {data_dir.resolve()}")
    console.print(f"  node:      {escape(name)}", highlight=False)

    def started(listening: bool) -> None:
        if display is not None:
            display.end(url if listening else None)
        elif listening:
            log.info("ready: %s", url)

    app = create_app(config, data_dir, starting=display.starting if display else nullcontext)
    server = _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="warning",
            backlog=4096,
            proxy_headers=False,
            timeout_keep_alive=30,
        ),
        started,
    )
    if display is not None:
        display.begin()
    # uvicorn turns Ctrl-C into a graceful stop; one that comes before it listens ends quietly too.
    with suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)

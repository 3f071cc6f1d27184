"""Running a server: load the config, print where it listens, hand the app to uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn
from rich.console import Console

from aigrid.config import load_config
from aigrid.grid.app import admin_key, create_app


def serve(config_path: Path | None, host: str, port: int, data_dir: Path) -> None:
    """Serve the grid until interrupted; raises ConfigError for an unusable config."""
    config = load_config(config_path)
    data_dir.mkdir(parents=True, exist_ok=True)
    key = admin_key(data_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    console = Console(stderr=True)
    names = ", ".join(n for m in config.models for n in (m.name, *m.aliases))
    console.print(f"[bold]aigrid[/bold] serving {names}")
    console.print(f"  URL:       http://{host}:{port}/v1")
    console.print(f"  admin key: {key}")
    console.print(f"  data dir:  {data_dir.resolve()}")
    uvicorn.run(
        create_app(config, data_dir),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=4096,
        proxy_headers=False,
        timeout_keep_alive=30,
    )

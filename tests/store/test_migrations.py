"""The migrations build exactly the schema the models declare."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from aigrid.store.db import make_engine, migrate
from aigrid.store.schema import Base

# The full-text indexes live outside the models: FTS5's own tables on SQLite.
_SEARCH_INDEXES = ("memories_fts", "experience_fts")


def _modelled(name: str | None, kind: str, _parent: dict[str, str | None]) -> bool:
    return not (kind == "table" and (name or "").startswith(_SEARCH_INDEXES))


def test_migrated_database_matches_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    migrate(engine)  # a second run is a no-op
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": _modelled})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []

"""The OpenAPI document of the whole HTTP API: what each route takes and answers, merged into the app's.

Most routes are plain Starlette routes with their own parsing (and the token endpoints bypass the
framework altogether for speed), so FastAPI cannot see them: each area's module here declares its
operations with pydantic models, and ``registry`` merges them into the document FastAPI builds.
"""

from aigrid.api.doc import entry, grid, kernel, learn
from aigrid.api.doc.registry import Operation

OPERATIONS: list[Operation] = [*grid.OPERATIONS, *kernel.OPERATIONS, *entry.OPERATIONS, *learn.OPERATIONS]

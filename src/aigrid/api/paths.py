"""Path segments that are any word but a sibling route's literal one, checked by their handlers.

Without them ``POST /v1/processes/{pid}/journal`` reached the signal route (a 400 naming the signal)
and ``DELETE /v1/learn/memory/teach`` the example route, where no such operation exists: the method
is not allowed there (405 with ``Allow``), as the OpenAPI document says.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class _Word(Convertor[str]):
    """A path segment matching the class's ``regex``, kept as text."""

    def convert(self, value: str) -> str:
        """The segment as the handler sees it."""
        return value

    def to_string(self, value: str) -> str:
        """The segment in a URL."""
        return value


class Signal(_Word):
    """A signal to a process: any word (its handler names the three) but the journal's."""

    regex = "(?!journal$)[^/]+"


class Example(_Word):
    """An example id (its handler checks it is a number) but not the teach route's word."""

    regex = "(?!teach$)[^/]+"


register_url_convertor("signal", Signal())
register_url_convertor("example", Example())

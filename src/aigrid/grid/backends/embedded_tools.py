"""Tool calling and structured output for the embedded model: what the model is told, the grammar
that keeps its answer well formed, and how that answer becomes OpenAI ``tool_calls``."""

from __future__ import annotations

import copy
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from llama_cpp.llama_grammar import PRIMITIVE_RULES, SchemaConverter

from aigrid.errors import bad_request

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
# In "auto" mode only the call branch of the grammar may start with this character.
CALL_START = CALL_OPEN[0]
# Objects and arrays inside one another in a schema: far beyond what any tool needs (OpenAI's
# structured outputs allow ten schema levels), well within what the grammar's converter recurses.
MAX_SCHEMA_DEPTH = 128

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The converter's string characters let raw control characters through, which strict JSON parsers
# refuse; the grammar excludes them so every answer parses anywhere.
_LOOSE_CHAR = PRIMITIVE_RULES["char"].content
_STRICT_CHAR = _LOOSE_CHAR.replace('[^"\\\\]', '[^"\\\\\\x00-\\x1F\\x7F]', 1)
# Plain text in "auto" mode: anything that cannot be mistaken for the start of a tool call.
_TEXT_RULE = f"[^{CALL_START}] [^\\x00]*"

ToolMode = Literal["none", "auto", "required"]


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the client offers the model."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """The tools of a request and how the model may use them; ``forced`` names the one it must call."""

    tools: tuple[Tool, ...] = ()
    mode: ToolMode = "none"
    forced: str | None = None

    @property
    def callable(self) -> tuple[Tool, ...]:
        """The tools the answer may call."""
        if self.mode == "none":
            return ()
        if self.forced is not None:
            return tuple(t for t in self.tools if t.name == self.forced)
        return self.tools


def parse_tools(body: dict[str, Any]) -> ToolPlan:
    """Validate ``tools`` and ``tool_choice``."""
    raw = body.get("tools")
    choice = body.get("tool_choice")
    if raw is None or raw == []:
        if choice not in (None, "none"):
            raise bad_request(
                "'tool_choice' is only allowed when 'tools' are specified.", param="tool_choice"
            )
        return ToolPlan()
    if not isinstance(raw, list):
        raise bad_request("'tools' must be an array of function tools.", param="tools")
    tools: list[Tool] = []
    for index, entry in enumerate(raw):
        tool = _parse_tool(entry, index)
        if any(t.name == tool.name for t in tools):
            raise bad_request(f"Tool names must be unique; '{tool.name}' appears twice.", param="tools")
        tools.append(tool)
    if choice is None or choice == "auto":
        return ToolPlan(tuple(tools), "auto")
    if choice in ("none", "required"):
        return ToolPlan(tuple(tools), choice)
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not any(t.name == name for t in tools):
            raise bad_request(
                f"'tool_choice' names a function that is not among 'tools': {name!r}.", param="tool_choice"
            )
        return ToolPlan(tuple(tools), "required", forced=name)
    raise bad_request(
        "'tool_choice' must be 'none', 'auto', 'required' or a function to call.",
        param="tool_choice",
    )


def _parse_tool(entry: Any, index: int) -> Tool:
    where = f"tools[{index}]"
    if not isinstance(entry, dict) or entry.get("type") != "function":
        raise bad_request(f"{where}: only tools of type 'function' are supported.", param="tools")
    function = entry.get("function")
    if not isinstance(function, dict):
        raise bad_request(f"{where}.function must be an object.", param="tools")
    name = function.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise bad_request(
            f"{where}.function.name must be 1-64 letters, digits, underscores or dashes.", param="tools"
        )
    description = function.get("description") or ""
    if not isinstance(description, str):
        raise bad_request(f"{where}.function.description must be a string.", param="tools")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise bad_request(f"{where}.function.parameters must be a JSON schema of an object.", param="tools")
    return Tool(name, description, parameters)


def content_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the answer's text must follow, from ``response_format``; None for free text."""
    raw = body.get("response_format")
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = raw.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is None:
            return {"type": "object"}
        if not isinstance(schema, dict):
            raise bad_request(
                "response_format.json_schema.schema must be an object.", param="response_format"
            )
        return schema
    raise bad_request(
        "response_format.type must be 'text', 'json_object' or 'json_schema'.", param="response_format"
    )


def tools_prompt(tools: tuple[Tool, ...]) -> str:
    """The system-prompt section that describes the tools and how to call one."""
    listing = "\n".join(
        json.dumps(
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            },
            ensure_ascii=False,
        )
        for t in tools
    )
    return (
        "# Tools\n\n"
        "You may call a function to help with the user's request. "
        "The available functions are listed within <tools></tools> tags:\n"
        f"<tools>\n{listing}\n</tools>\n\n"
        "To call a function, answer with only a JSON object naming the function and its arguments, "
        f"within {CALL_OPEN}{CALL_CLOSE} tags:\n"
        f'{CALL_OPEN}\n{{"name": <function-name>, "arguments": <arguments-object>}}\n{CALL_CLOSE}'
    )


def render_call(name: str, arguments: Any) -> str:
    """A past tool call written the way the model is asked to write one."""
    text = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{CALL_OPEN}\n{text}\n{CALL_CLOSE}"


def build_grammar(plan: ToolPlan, schema: dict[str, Any] | None) -> str | None:
    """A GBNF grammar for the answer, or None when it may be any text.

    ``required`` admits exactly one call whose arguments match the called tool's schema; ``auto``
    admits such a call or text (JSON per ``schema`` when given); ``none`` admits the text alone.
    """
    calls = plan.callable
    if not calls and schema is None:
        return None
    for tool in calls:
        _check_depth(tool.parameters, "tools")
    if schema is not None:
        _check_depth(schema, "response_format")
    # llama_cpp's converter is untyped; it stays Any within this function.
    factory: Any = SchemaConverter
    converter: Any = factory(
        prop_order={"name": 0, "arguments": 1}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    # Every schema hangs off one holder so that each resolves its own '#/...' references; the
    # resolver cannot step through arrays, hence a mapping.
    defs = {f"tool{i}": _rebase_refs(t.parameters, f"/$defs/tool{i}") for i, t in enumerate(calls)}
    if schema is not None:
        defs["content"] = _rebase_refs(schema, "/$defs/content")
    alternatives: list[str] = []
    try:
        converter.resolve_refs({"$defs": defs}, "")
        if calls:
            call = {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"name": {"const": t.name}, "arguments": defs[f"tool{i}"]},
                        "required": ["name", "arguments"],
                    }
                    for i, t in enumerate(calls)
                ]
            }
            call_rule = converter.visit(call, "call")
            alternatives.append(f'"{CALL_OPEN}\\n" {call_rule} "\\n{CALL_CLOSE}"')
        if plan.mode != "required":
            alternatives.append(
                converter.visit(defs["content"], "content") if schema is not None else _TEXT_RULE
            )
        rules = converter.format_grammar()
    except Exception as exc:  # the converter signals unsupported schemas with assorted exception types
        param = "tools" if calls else "response_format"
        raise bad_request(f"Unsupported JSON schema: {exc}", param=param) from exc
    rules = rules.replace(f"char ::= {_LOOSE_CHAR}", f"char ::= {_STRICT_CHAR}")
    return f"{rules}\nroot ::= {' | '.join(alternatives)}\n"


def _check_depth(schema: Any, param: str) -> None:
    """Refuse a schema nested deeper than the grammar's converter can recurse through."""
    level = [schema]
    for _ in range(MAX_SCHEMA_DEPTH):
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node if isinstance(node, list) else ())
            if isinstance(child, dict | list)
        ]
        if not level:
            return
    raise bad_request(f"The JSON schema is nested more than {MAX_SCHEMA_DEPTH} levels deep.", param=param)


def _rebase_refs(schema: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A copy of ``schema`` whose local references point at where it sits inside the holder.

    A schema built in Python may share one object in several places (the copy keeps the sharing):
    each object is rewritten once.
    """
    out = copy.deepcopy(schema)
    seen: set[int] = set()

    def visit(node: Any) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#"):
                node["$ref"] = "#" + prefix + ref[1:]
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(out)
    return out


def parse_call(text: str, plan: ToolPlan) -> dict[str, Any] | None:
    """The OpenAI ``tool_call`` in an answer, or None when the answer is not a complete call."""
    body = text.strip()
    if not body.startswith(CALL_OPEN) or not body.endswith(CALL_CLOSE):
        return None
    try:
        # The grammar already keeps control characters out; strict=False only forgives the old ones.
        payload = json.loads(body[len(CALL_OPEN) : -len(CALL_CLOSE)], strict=False)
    except json.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    name = payload.get("name")
    arguments = payload.get("arguments")
    if not any(t.name == name for t in plan.callable) or not isinstance(arguments, dict):
        return None
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


def is_call(text: str, plan: ToolPlan) -> bool:
    """Whether an answer went down the grammar's tool-call branch."""
    return plan.mode == "required" or (plan.mode == "auto" and text.startswith(CALL_START))


def assistant_message(text: str, finish: str, plan: ToolPlan) -> tuple[dict[str, Any], str]:
    """The assistant message and finish reason; a call cut short by the token cap stays text."""
    call = parse_call(text, plan) if is_call(text, plan) else None
    if call is not None:
        return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    return {"role": "assistant", "content": text}, finish

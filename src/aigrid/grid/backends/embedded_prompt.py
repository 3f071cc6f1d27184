"""Reading requests for the embedded model: the parameters it honours or refuses, chat prompts, and
the token-level plan a request becomes before the model sees it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from aigrid.errors import APIError, bad_request, context_length_exceeded, unsupported_parameter
from aigrid.grid.backends.embedded_tools import (
    CALL_START,
    ToolPlan,
    build_grammar,
    content_schema,
    parse_tools,
    render_call,
    tools_prompt,
)

# ChatML, for a model file that carries no chat template of its own.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_MAX_STOPS = 4
_RANGES = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "frequency_penalty": (-2.0, 2.0),
    "presence_penalty": (-2.0, 2.0),
}
_MAX_EMBED_INPUTS = 2048
# OpenAI's range for a token's bias; -100 bans a token and 100 all but forces it.
_BIAS_LIMIT = 100.0
# Each biased token is a sampler entry for every step; a bound keeps one request's cost in check.
_MAX_BIASED_TOKENS = 1024


@dataclass(frozen=True, slots=True)
class Sampling:
    """How to pick tokens, as the client asked; ``max_tokens`` is None when the client set no cap."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()


def reject_unsupported(endpoint: str, body: dict[str, Any]) -> None:
    """Refuse the parameters this model cannot honour, naming the first one found."""
    n = body.get("n")
    if n is not None and n != 1:
        raise unsupported_parameter("n", "only n=1 is supported")
    if endpoint == "chat":
        if body.get("logprobs") not in (None, False):
            raise unsupported_parameter("logprobs", "log probabilities are not available")
        if body.get("top_logprobs") is not None:
            raise unsupported_parameter("top_logprobs", "log probabilities are not available")
        if body.get("modalities") not in (None, ["text"]):
            raise unsupported_parameter("modalities", "only text is supported")
        for name in ("audio", "prediction", "functions", "function_call", "web_search_options"):
            if body.get(name) is not None:
                raise unsupported_parameter(name)
    else:
        if body.get("logprobs") is not None:
            raise unsupported_parameter("logprobs", "log probabilities are not available")
        if body.get("suffix") not in (None, ""):
            raise unsupported_parameter("suffix", "insertion is not supported")
        if body.get("best_of") not in (None, 1):
            raise unsupported_parameter("best_of", "only best_of=1 is supported")
        if not isinstance(body.get("echo", False), bool):
            raise bad_request("'echo' must be a boolean.", param="echo")


def parse_sampling(body: dict[str, Any]) -> Sampling:
    """Read and type-check the sampling parameters; those left out keep OpenAI's defaults."""
    values: dict[str, float] = {}
    for name, (low, high) in _RANGES.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad_request(f"Invalid type for '{name}': expected a number.", param=name)
        if not low <= value <= high:
            raise bad_request(f"'{name}' must be between {low:g} and {high:g}, got {value}.", param=name)
        values[name] = float(value)
    return Sampling(
        max_tokens=_max_tokens(body),
        seed=_optional_int(body, "seed"),
        stop=_stops(body.get("stop")),
        logit_bias=_logit_bias(body.get("logit_bias")),
        **values,
    )


def _logit_bias(value: object) -> tuple[tuple[int, float], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise bad_request("'logit_bias' must be an object mapping token ids to biases.", param="logit_bias")
    if len(value) > _MAX_BIASED_TOKENS:
        message = f"'logit_bias' may bias at most {_MAX_BIASED_TOKENS} tokens, got {len(value)}."
        raise bad_request(message, param="logit_bias")
    biases: list[tuple[int, float]] = []
    for key, bias in value.items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) < 10):
            raise bad_request(f"Invalid key in 'logit_bias': {key!r} is not a token id.", param="logit_bias")
        number = isinstance(bias, int | float) and not isinstance(bias, bool)
        if not number or not -_BIAS_LIMIT <= bias <= _BIAS_LIMIT:
            raise bad_request(
                f"Invalid value for token {key} in 'logit_bias': it must be a number from -100 to 100.",
                param="logit_bias",
            )
        biases.append((int(key), float(bias)))
    return tuple(sorted(biases))


def max_tokens_param(body: dict[str, Any]) -> str:
    """The spelling of the answer cap the client used, for naming it in errors."""
    return "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"


def _max_tokens(body: dict[str, Any]) -> int | None:
    name = max_tokens_param(body)
    value = _optional_int(body, name)
    if value is not None and value < 1:
        raise bad_request(f"'{name}' must be at least 1, got {value}.", param=name)
    return value


def _optional_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"Invalid type for '{name}': expected an integer.", param=name)
    return value


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise bad_request("Invalid type for 'stop': expected a string or an array of strings.", param="stop")
    if len(value) > _MAX_STOPS:
        raise bad_request(f"'stop' takes at most {_MAX_STOPS} sequences.", param="stop")
    return tuple(s for s in value if s)


def completion_prompt(body: dict[str, Any]) -> str:
    """The ``prompt`` of a completions request: one string."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        raise unsupported_parameter("prompt", "only one prompt per request is supported")
    if not isinstance(prompt, str):
        raise bad_request("'prompt' must be a string (token arrays are not supported).", param="prompt")
    return prompt


def chat_messages(raw: Any, tools_section: str | None) -> list[dict[str, str]]:
    """Messages as plain ``{role, content}`` strings that any chat template can carry.

    Tool calls become ``<tool_call>`` text in the assistant's turn; tool results become a user turn
    of ``<tool_response>`` blocks, one turn for consecutive results, since many templates know no
    'tool' role and some insist that user and assistant alternate.
    """
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty array.", param="messages")
    out: list[dict[str, str]] = []
    results_turn: dict[str, str] | None = None
    for index, message in enumerate(raw):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{index}] must be an object.", param="messages")
        role = message.get("role")
        content = message.get("content")
        if role == "tool":
            block = f"<tool_response>\n{_text(content, index, allow_none=False)}\n</tool_response>"
            if results_turn is None:
                results_turn = {"role": "user", "content": block}
                out.append(results_turn)
            else:
                results_turn["content"] += "\n" + block
            continue
        results_turn = None
        if role in ("system", "developer"):
            out.append({"role": "system", "content": _text(content, index, allow_none=False)})
        elif role == "user":
            out.append({"role": "user", "content": _text(content, index, allow_none=False)})
        elif role == "assistant":
            parts = [_text(content, index, allow_none=True)]
            parts += [_past_call(call, index) for call in _calls(message, index)]
            out.append({"role": "assistant", "content": "\n".join(p for p in parts if p)})
        else:
            raise bad_request(f"messages[{index}].role {role!r} is not supported.", param="messages")
    if tools_section:
        if out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{tools_section}"}
        else:
            out.insert(0, {"role": "system", "content": tools_section})
    return out


def _text(content: Any, index: int, *, allow_none: bool) -> str:
    if isinstance(content, str):
        return content
    if content is None and allow_none:
        return ""
    if not isinstance(content, list):
        raise bad_request(
            f"messages[{index}].content must be a string or an array of text parts.", param="messages"
        )
    texts: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            raise APIError(
                400,
                f"messages[{index}]: content parts of type {kind!r} are not supported by this model.",
                param="messages",
                code="unsupported_content",
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise bad_request(f"messages[{index}]: a text part needs a 'text' string.", param="messages")
        texts.append(text)
    return "\n".join(texts)


def _calls(message: dict[str, Any], index: int) -> list[Any]:
    calls = message.get("tool_calls")
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise bad_request(f"messages[{index}].tool_calls must be an array.", param="messages")
    return calls


def _past_call(call: Any, index: int) -> str:
    function = call.get("function") if isinstance(call, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    arguments = function.get("arguments") if isinstance(function, dict) else None
    if not isinstance(name, str) or not isinstance(arguments, str):
        raise bad_request(
            f"messages[{index}].tool_calls entries need function.name and function.arguments strings.",
            param="messages",
        )
    try:
        parsed: Any = json.loads(arguments)
    except json.JSONDecodeError:
        parsed = arguments
    return render_call(name, parsed)


class ChatRenderer:
    """Turns messages into the prompt text with the model's own chat template."""

    def __init__(self, template: str | None, bos_token: str, eos_token: str) -> None:
        self._formatter = Jinja2ChatFormatter(
            template or FALLBACK_TEMPLATE, eos_token=eos_token, bos_token=bos_token
        )

    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt, ending where the assistant's answer begins."""
        try:
            # The formatter's own types are llama_cpp's message TypedDicts; ours are plain dicts.
            return str(self._formatter(messages=messages).prompt)  # type: ignore[arg-type]
        except Exception as exc:  # template errors are jinja2 exceptions or raise_exception's ValueError
            raise bad_request(
                f"The messages do not fit the model's chat template: {exc}", param="messages"
            ) from exc


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """Text to generate from a tokenized prompt, as the engine receives it.

    An answer that starts with ``stop_exempt`` (a tool call) ignores the stop sequences.
    """

    prompt_tokens: list[int]
    max_tokens: int
    sampling: Sampling
    grammar: str | None = None
    stop_exempt: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated generation request and what shapes its answer."""

    request: GenerateRequest
    tools: ToolPlan = field(default_factory=ToolPlan)
    echo: str = ""


def vocab_handle(model: Any) -> Any:
    """The C vocabulary of a vocabulary-only model (``ModelSpec.load_vocab``)."""
    return model.vocab


class RequestReader:
    """Turns request bodies into token-level plans with the model's template and tokenizer.

    It works on a vocabulary-only copy of the model, so it runs on the event loop beside the worker
    without touching the model that generates.
    """

    def __init__(
        self, vocab: Any, *, context_length: int, max_output_tokens: int | None, embed_context: int
    ) -> None:
        self._vocab = vocab
        self._context_length = context_length
        self._max_output_tokens = max_output_tokens
        self._embed_context = embed_context
        metadata: dict[str, str] = vocab.metadata()
        bos, eos = vocab.token_bos(), vocab.token_eos()
        self._bos_text: str = vocab.token_get_text(bos) if bos >= 0 else ""
        eos_text: str = vocab.token_get_text(eos) if eos >= 0 else ""
        self._renderer = ChatRenderer(metadata.get("tokenizer.chat_template"), self._bos_text, eos_text)
        dims = metadata.get(f"{metadata.get('general.architecture')}.embedding_length", "")
        self._embed_dims = int(dims) if dims.isdigit() else None
        # No token covers more characters than the longest piece of the vocabulary, so a text longer
        # than that many times the context cannot fit: it is refused without tokenizing megabytes.
        pieces = (len(vocab.token_get_text(token)) for token in range(int(vocab.n_vocab())))
        self._longest_piece = max(max(pieces, default=1), 1)

    def plan(self, endpoint: str, body: dict[str, Any]) -> Plan:
        """Validate a chat or completions request and tokenize its prompt."""
        reject_unsupported(endpoint, body)
        sampling = parse_sampling(body)
        self._check_token_ids(sampling)
        if endpoint == "completions":
            prompt = completion_prompt(body)
            tokens = self._prompt_tokens(prompt)
            budget = self._budget(len(tokens), sampling, body, "prompt")
            return Plan(GenerateRequest(tokens, budget, sampling), echo=prompt if body.get("echo") else "")
        tools = parse_tools(body)
        schema = content_schema(body)
        tokens = self._chat_tokens(body, tools)
        budget = self._budget(len(tokens), sampling, body, "messages")
        grammar = build_grammar(tools, schema)
        if grammar is not None:
            self._check_grammar(grammar, "tools" if tools.callable else "response_format")
        # A stop sequence inside a call's JSON would only break it.
        exempt = CALL_START if tools.mode == "auto" and tools.callable else None
        if tools.mode == "required":
            sampling = dataclasses.replace(sampling, stop=())
        return Plan(GenerateRequest(tokens, budget, sampling, grammar, exempt), tools)

    def _check_token_ids(self, sampling: Sampling) -> None:
        size = int(self._vocab.n_vocab())
        outside = [token for token, _ in sampling.logit_bias if token >= size]
        if outside:
            raise bad_request(
                f"Invalid key in 'logit_bias': token {outside[0]} is not in the model's vocabulary "
                f"(ids 0 to {size - 1}).",
                param="logit_bias",
            )

    def count(self, endpoint: str, body: dict[str, Any]) -> int | None:
        """The exact prompt tokens of a request, or None when it is malformed; raises
        ``context_length_exceeded`` for a prompt sure not to fit, without tokenizing it."""
        try:
            if endpoint == "chat":
                return len(self._chat_tokens(body, parse_tools(body)))
            if endpoint == "completions":
                return len(self._prompt_tokens(completion_prompt(body)))
            return sum(self._embedding_counts(embedding_inputs(body)))
        except APIError as error:
            if error.code == "context_length_exceeded":
                raise  # sure not to fit: refused as it is, not counted again by an estimate
            return None

    def embedding_texts(self, body: dict[str, Any]) -> list[str]:
        """Validate an embeddings request and return its inputs."""
        texts = embedding_inputs(body)
        if body.get("encoding_format") not in (None, "float", "base64"):
            raise bad_request("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
        dims = body.get("dimensions")
        if dims is not None and dims != self._embed_dims:
            raise unsupported_parameter("dimensions", f"this model's embeddings have {self._embed_dims}")
        longest = max(self._embedding_counts(texts))
        if longest > self._embed_context:
            raise _too_long(longest, self._embed_context, "input")
        return texts

    def chat_tokens(self, messages: list[dict[str, Any]]) -> list[int]:
        """A conversation's prompt tokens, ending where the assistant's answer begins (no tools)."""
        return self._rendered_tokens(chat_messages(messages, None))

    def _chat_tokens(self, body: dict[str, Any], tools: ToolPlan) -> list[int]:
        section = tools_prompt(tools.tools) if tools.mode != "none" else None
        return self._rendered_tokens(chat_messages(body.get("messages"), section))

    def _rendered_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        # The template adds to the messages' text, never drops any: a conversation sure not to fit
        # is refused before rendering copies its megabytes.
        fewest = self._fewest_tokens(sum(len(m["content"]) for m in messages), self._context_length)
        if fewest is not None:
            raise _too_long(fewest, self._context_length, "messages")
        return self._tokenize(self._renderer.render(messages))

    def _prompt_tokens(self, prompt: str) -> list[int]:
        tokens = self._tokenize(prompt)
        if tokens:
            return tokens
        bos = int(self._vocab.token_bos())
        if bos < 0:
            raise bad_request("'prompt' must not be empty.", param="prompt")
        # Generation needs at least one token to start from.
        return [bos]

    def _fewest_tokens(self, characters: int, limit: int) -> int | None:
        """The fewest tokens a text of ``characters`` needs, when that is sure to be over ``limit``."""
        fewest = characters // self._longest_piece
        return fewest if fewest > limit else None

    def _tokenize(self, text: str) -> list[int]:
        fewest = self._fewest_tokens(len(text), self._context_length)
        if fewest is not None:
            raise _too_long(fewest, self._context_length, "messages")
        # A template that writes the BOS itself must not get a second one.
        add_bos = not (self._bos_text and text.startswith(self._bos_text))
        tokens: list[int] = self._vocab.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        return tokens

    def _embedding_counts(self, texts: list[str]) -> list[int]:
        # The same tokenization that llama_cpp's embed() applies; a text sure not to fit is not read.
        return [
            self._fewest_tokens(len(t), self._embed_context)
            or len(self._vocab.tokenize(t.encode("utf-8"), add_bos=True, special=False))
            for t in texts
        ]

    def _budget(self, prompt: int, sampling: Sampling, body: dict[str, Any], prompt_param: str) -> int:
        """How many tokens the answer may have; refuses what cannot fit."""
        limit, cap, asked = self._context_length, self._max_output_tokens, sampling.max_tokens
        if asked is None:
            room = limit - prompt
            if room < 1:
                raise _too_long(prompt + 1, limit, prompt_param)
            return min(room, cap) if cap else room
        if cap is not None and asked > cap:
            name = max_tokens_param(body)
            raise bad_request(
                f"'{name}' is too large: {asked}. This model supports at most {cap} completion tokens.",
                param=name,
            )
        if prompt + asked > limit:
            raise _too_long(prompt + asked, limit, prompt_param)
        return asked

    def _check_grammar(self, grammar: str, param: str) -> None:
        # A grammar llama.cpp cannot parse would crash the worker, so it is tried here first.
        sampler = llama_cpp.llama_sampler_init_grammar(
            vocab_handle(self._vocab), grammar.encode("utf-8"), b"root"
        )
        if not sampler:
            raise bad_request("The JSON schema could not be turned into a grammar.", param=param)
        llama_cpp.llama_sampler_free(sampler)


def embedding_inputs(body: dict[str, Any]) -> list[str]:
    """The ``input`` of an embeddings request: one or more non-empty strings."""
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise bad_request(
            "'input' must be a string or a non-empty array of strings (token arrays are not supported).",
            param="input",
        )
    if len(texts) > _MAX_EMBED_INPUTS:
        raise bad_request(f"'input' takes at most {_MAX_EMBED_INPUTS} strings.", param="input")
    if not all(texts):
        raise bad_request("'input' must not contain empty strings.", param="input")
    return texts


def _too_long(needed: int, limit: int, param: str) -> APIError:
    error = context_length_exceeded(needed, limit)
    error.param = param
    return error

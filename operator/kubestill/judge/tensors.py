"""Reading answers: Triton / KServe v2 inference responses and OpenAI-compatible completion bodies.

Pure: parsed JSON in, rows out. Anything that is not the shape a task needs raises Incomparable, whose `reason`
becomes a metric label, so a malformed answer is counted as what it is and never as agreement or disagreement.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class Incomparable(ValueError):
    """The two answers cannot be compared. `reason` is a short metric label: missing_output, malformed, shape,
    zero_vector, single_passage."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class Tensor:
    """One v2 output: its name, shape (batch first) and data flattened in row-major order."""

    name: str
    shape: tuple[int, ...]
    data: tuple[Any, ...]

    def rows(self) -> list[tuple[Any, ...]]:
        """The data split along the first (batch) dimension: shape[0] rows of equal length."""
        if not self.shape:
            return [self.data]
        batch = self.shape[0]
        if batch <= 0 or len(self.data) % batch:
            raise Incomparable("shape", f"{self.name}: {len(self.data)} values do not split into {batch} rows")
        width = len(self.data) // batch
        return [self.data[i * width:(i + 1) * width] for i in range(batch)]


def _flatten(data: Any) -> list[Any]:
    # The v2 protocol sends data flattened; some servers nest it by shape. Both read the same.
    if isinstance(data, list):
        return [x for item in data for x in _flatten(item)]
    return [data]


def v2_outputs(body: Mapping[str, Any]) -> dict[str, Tensor]:
    """The `outputs` of a v2 inference response by name (KServe Open Inference Protocol, "Inference Response
    JSON Object"). Raises Incomparable("malformed") when there is no list of named outputs with data."""
    outputs = body.get("outputs")
    if not isinstance(outputs, list):
        raise Incomparable("malformed", "the response has no `outputs` list")
    tensors: dict[str, Tensor] = {}
    for out in outputs:
        if not isinstance(out, Mapping) or not isinstance(out.get("name"), str) or "data" not in out:
            raise Incomparable("malformed", f"output without a name or data: {str(out)[:80]}")
        shape = out.get("shape") or []
        tensors[out["name"]] = Tensor(out["name"], tuple(int(d) for d in shape), tuple(_flatten(out["data"])))
    return tensors


def output(tensors: Mapping[str, Tensor], name: str) -> Tensor:
    """The output `name`, or Incomparable("missing_output")."""
    if name not in tensors:
        raise Incomparable("missing_output", f"no output {name!r} (got {sorted(tensors)})")
    return tensors[name]


def completion_texts(body: Mapping[str, Any]) -> list[str]:
    """The generated texts of an OpenAI-compatible body, one per choice in `index` order: chat completions
    (`choices[].message.content`) or completions (`choices[].text`); a v2 response with a TEXT output (the
    kubestill generation contract, kubestill.api.triton) is read too. Raises Incomparable("malformed")."""
    if "outputs" in body:
        return [str(_text(row[0])) for row in output(v2_outputs(body), "TEXT").rows()]
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise Incomparable("malformed", "neither v2 `outputs` nor OpenAI `choices`")
    texts = []
    for choice in sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, Mapping) else 0):
        message = choice.get("message") if isinstance(choice, Mapping) else None
        text = message.get("content") if isinstance(message, Mapping) else None
        if text is None and isinstance(choice, Mapping):
            text = choice.get("text")
        if not isinstance(text, str):
            raise Incomparable("malformed", f"a choice without text: {str(choice)[:80]}")
        texts.append(text)
    return texts


def streamed_completion(raw: str) -> dict[str, Any]:
    r"""An OpenAI-compatible server-sent-event stream (`"stream": true`) as the one completion body it adds up to:
    per choice index, the `delta.content` (chat) or `text` (completions) pieces of every `data:` event joined,
    up to `data: [DONE]`. Raises Incomparable("malformed") for an event that is not JSON, or a stream with no
    choices.

    >>> stream = ('data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n'
    ...           'data: {"choices": [{"index": 0, "delta": {"content": "Par"}}]}\n\n'
    ...           'data: {"choices": [{"index": 0, "delta": {"content": "is"}}]}\n\ndata: [DONE]\n\n')
    >>> streamed_completion(stream)
    {'choices': [{'index': 0, 'text': 'Paris'}]}
    """
    pieces: dict[int, list[str]] = {}
    for line in raw.splitlines():
        if not line.startswith("data:"):
            continue  # comments, event names, blank separators
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            break
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise Incomparable("malformed", f"a stream event is not JSON: {data[:80]}") from exc
        choices = event.get("choices") if isinstance(event, Mapping) else None
        for choice in choices if isinstance(choices, list) else []:
            if isinstance(choice, Mapping):
                pieces.setdefault(int(choice.get("index", 0)), []).append(_piece(choice))
    if not pieces:
        raise Incomparable("malformed", "a stream without choices")
    return {"choices": [{"index": i, "text": "".join(parts)} for i, parts in sorted(pieces.items())]}


def _piece(choice: Mapping[str, Any]) -> str:
    delta = choice.get("delta")
    piece = delta.get("content") if isinstance(delta, Mapping) else None
    piece = piece if piece is not None else choice.get("text")
    return piece if isinstance(piece, str) else ""  # a role-only or finish event adds no text


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def numbers(row: Sequence[Any], name: str) -> list[float]:
    """A row of a numeric output as floats, or Incomparable("malformed")."""
    try:
        return [float(x) for x in row]
    except (TypeError, ValueError) as exc:
        raise Incomparable("malformed", f"{name}: not numbers ({exc})") from exc

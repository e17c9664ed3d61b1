"""An OpenAI-compatible chat server around a real local causal LM, standing where a user's LLM gateway stands:
POST /v1/chat/completions (the subset the trainer's OpenAI teacher sends: messages, max_tokens, temperature 0)
answers with the model's greedy continuation of the chat template, after checking the bearer key. The model's
text is real; only the transport is written here: the protocol is small, and `transformers serve` (the library's
own OpenAI-compatible server) needs its [serving] extra (fastapi, uvicorn, openai), which the development venv does
not install, and checks no key."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from ..local_http import serving


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
    """Answer the handler's request with `payload` as JSON."""
    raw = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


@contextmanager
def chat_server(model_dir: Path, api_key: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(base URL ending in /v1, the requests seen) while the server runs; one generation at a time."""
    import torch

    from kubestill_trainer.tasks.generation_lm import load_causal_lm, load_tokenizer

    tokenizer, model = load_tokenizer(model_dir), load_causal_lm(model_dir).eval()
    lock = threading.Lock()
    seen: list[dict[str, Any]] = []

    def complete(body: dict[str, Any]) -> dict[str, Any]:
        ids = tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        with lock, torch.no_grad():
            out = model.generate(**ids, max_new_tokens=int(body.get("max_tokens") or 16), do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        new = out[0, ids["input_ids"].shape[1]:]
        text = tokenizer.decode(new, skip_special_tokens=True).strip()
        finish = "stop" if len(new) and int(new[-1]) == tokenizer.eos_token_id else "length"
        return {"object": "chat.completion", "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish}]}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "body": body})
            if self.headers.get("Authorization") != f"Bearer {api_key}":
                send_json(self, 401, {"error": {"message": "invalid API key"}})
            elif self.path != "/v1/chat/completions":
                send_json(self, 404, {"error": {"message": f"no route {self.path}"}})
            else:
                send_json(self, 200, complete(body))

    with serving(Handler) as url:
        yield f"{url}/v1", seen

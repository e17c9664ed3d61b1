"""The OpenAI-compatible teacher speaks the HTTP protocol to a local server written here (the protocol is
small: /embeddings and /chat/completions): the key header, batching, invalid answers, errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from kubestill.api.v1alpha1.distillationjob import OpenAITeacher as Spec
from kubestill_trainer.tasks.teacher import TeacherError
from kubestill_trainer.teachers.openai import API_KEY_ENV, OpenAITeacher

from .chat_server import send_json

SEEN: list[dict[str, Any]] = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        SEEN.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.headers.get("Authorization") != "Bearer sekret":
            self._send(401, {"error": "no key"})
        elif self.path == "/v1/embeddings":
            data = [{"index": i, "embedding": [float(len(t)), 1.0]} for i, t in enumerate(body["input"])]
            self._send(200, {"data": list(reversed(data))})  # out of order on purpose: index decides
        elif self.path == "/v1/chat/completions":
            text = body["messages"][0]["content"].rsplit("Text: ", 1)[1]
            answer = "Sport." if "goal" in text else ("business" if "bank" in text else "I am not sure")
            self._send(200, {"choices": [{"message": {"content": answer},
                                          "logprobs": {"content": [{"logprob": -0.1}]}}]})
        else:
            self._send(404, {"error": "no such path"})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        send_json(self, status, payload)


@pytest.fixture
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_embeddings_in_input_order_with_the_key(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "sekret")
    teacher = OpenAITeacher(Spec(base_url=base_url, model="m"))
    emb = teacher.embed(["a", "abc"])
    np.testing.assert_array_equal(emb, np.array([[1.0, 1.0], [3.0, 1.0]], dtype=np.float32))
    assert SEEN[-1]["body"] == {"model": "m", "input": ["a", "abc"]}


def test_classify_marks_answers_that_are_not_labels(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "sekret")
    teacher = OpenAITeacher(Spec(base_url=base_url, model="m"), labels=["business", "sport"])
    scores = teacher.classify(["the bank", "a late goal", "weather"])
    assert scores.labels == ["business", "sport"]
    assert scores.logits.argmax(axis=1)[:2].tolist() == [0, 1]
    assert scores.logits[0, 0] == pytest.approx(-0.1)
    assert scores.invalid[:2] == [None, None] and "not a label" in (scores.invalid[2] or "")


def test_missing_key_is_a_clear_error(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with pytest.raises(TeacherError, match="HTTP 401"):
        OpenAITeacher(Spec(base_url=base_url, model="m")).embed(["x"])


def test_classify_needs_candidate_labels(base_url: str) -> None:
    with pytest.raises(TeacherError, match=r"data\.fields\.label"):
        OpenAITeacher(Spec(base_url=base_url, model="m")).classify(["x"])

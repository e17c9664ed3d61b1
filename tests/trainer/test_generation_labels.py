"""Generation labels from a remote teacher (token ids and top-k log-probabilities as an API returns them) and
the confidence and validity of each answer, with worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kubestill_trainer.tasks.generation import MISSING_LOGPROB, _confidence, _remote_answers
from kubestill_trainer.tasks.teacher import Generated

ANSWERS = [
    Generated("Paris.", [5, 2], topk_ids=np.array([[5, 7], [2, 9]]),
              topk_logprobs=np.array([[-0.1, -2.0], [-0.2, -3.0]], np.float32)),
    Generated("", None),  # an API that returned text without token ids
]


def test_remote_answers_are_padded_to_the_longest_with_missing_logprobs() -> None:
    tokens, topk_ids, topk_lp, chosen = _remote_answers(ANSWERS, 2, 1.0)
    assert tokens == [[5, 2], []]
    assert topk_ids.tolist() == [[[5, 7], [2, 9]], [[0, 0], [0, 0]]]
    assert topk_lp[1].tolist() == [[MISSING_LOGPROB] * 2] * 2
    # At temperature 1 the chosen token's log-probability is the stored top-1.
    assert torch.allclose(chosen[0], torch.tensor([-0.1, -0.2]))


def test_remote_chosen_logprob_at_another_temperature_is_its_share_of_the_top_k() -> None:
    *_, chosen = _remote_answers(ANSWERS, 2, 2.0)
    # [-0.1, -2.0] / 2 -> log_softmax first = -log(1 + e^(-1.0 + 0.05)) = -0.3252
    assert chosen[0, 0].item() == pytest.approx(-math.log1p(math.exp(-0.95)), abs=1e-5)


@pytest.mark.parametrize(
    ("drop_empty", "expected_invalid"),
    [(True, [None, "empty teacher answer"]), (False, [None, "the teacher returned text without token ids"])],
)
def test_confidence_is_the_geometric_mean_probability_of_the_answer(drop_empty: bool,
                                                                    expected_invalid: list[str | None]) -> None:
    tokens, _, _, chosen = _remote_answers(ANSWERS, 2, 1.0)
    conf, invalid = _confidence(tokens, chosen, 2, 8, drop_empty)
    assert conf[0] == pytest.approx(math.exp(-0.15), rel=1e-5)  # exp(mean(-0.1, -0.2))
    assert conf[1] == 1.0  # nothing to average: the row is judged by `invalid`
    assert invalid == expected_invalid


def test_an_answer_of_only_end_of_sequence_is_empty() -> None:
    conf, invalid = _confidence([[2]], torch.tensor([[-0.5]]), 2, 8, True)
    assert invalid == ["empty teacher answer"] and conf[0] == pytest.approx(math.exp(-0.5), rel=1e-5)


@pytest.mark.parametrize("max_length", [4, 8, 64])
def test_training_reads_a_long_prompt_as_decoding_does(max_length: int) -> None:
    """A BOS tokenizer (Llama's kind), no chat template: GenerationModel.encode's prompt tokens are those
    `generate` feeds the model, BOS kept where a prompt is cut to its last tokens (a plain slice of the ids
    dropped it: the student trained on other inputs than it was asked with), and the tokenizer is left as it was."""
    from kubestill_trainer.tasks.base import Row
    from kubestill_trainer.tasks.generation import GenerationModel
    from kubestill_trainer.tasks.generation_lm import generate, prompt_ids

    from .tiny_lm import llama, tokenizer

    tok = tokenizer(200, "bpe", bos=True)
    prompt = "news item 3: markets rise as rates fall and sport teams win the cup 3"
    model = GenerationModel(llama(tok), tok, max_length, max_new_tokens=2, chat=False)
    features = model.encode([Row("a", prompt, "[5, 6]")], max_length)
    start = int(features["response_positions"][0, 0]) + 1  # answer token 0 is predicted at start - 1
    encoded = features["input_ids"][0, :start].tolist()
    full = tok(prompt)["input_ids"]
    assert encoded == prompt_ids(tok, prompt, False, max_length)
    assert encoded[0] == tok.bos_token_id and len(encoded) == min(max_length, len(full))
    assert encoded[1:] == full[len(full) - len(encoded) + 1:]  # the prompt's last tokens
    # What decoding feeds the model: the same ids (left-padded batch of one, nothing padded).
    fed: list[list[int]] = []
    lm = model.lm
    original = lm.generate

    def spy(**kwargs: object) -> object:
        fed.append(kwargs["input_ids"][0].tolist())  # type: ignore[index]
        return original(**kwargs)

    lm.generate = spy  # type: ignore[method-assign]
    generate(lm, tok, [prompt], max_new_tokens=1, max_prompt_tokens=max_length, chat=False)
    assert fed == [encoded]
    assert (tok.padding_side, tok.truncation_side) == ("right", "right")

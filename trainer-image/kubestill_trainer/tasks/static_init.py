"""Model2Vec initialisation of static-embedding students (student.architecture.numLayers 0, init model2vec).

Model2Vec (Tulkens and van Dongen, MinishLab, 2024: https://github.com/MinishLab/model2vec, the blog post
"Model2Vec: Distill a Small Fast Model from any Sentence Transformer") needs no training data: every token of
the teacher's vocabulary is passed through the teacher alone (mean of its output states), the vectors are
reduced by PCA, and each is scaled by a SIF weight a / (a + p(token)) with p from Zipf's law on the token's rank
(the vocabulary is ordered roughly by frequency). A sentence is the mean of its tokens' vectors.

The `model2vec` library does the expensive part (the vocabulary through the teacher, with its vocabulary
cleaning); the PCA is ours (sklearn) because the student needs its components to map back to the teacher's
space. The student keeps kubestill's static format (a 0-layer encoder: token + position embeddings, then
LayerNorm, then mean pooling) so that every export and serving path works unchanged. LayerNorm would erase the
SIF weights (it fixes every token's norm), so each token's row carries three reserved dimensions, masked out by
the LayerNorm's weight: one cancels the row's mean, two hold +b and -b to set its variance to exactly 1. Then
LayerNorm returns the PCA vector itself, weight included (`layer_norm_rows`). The embedding student also gets a
Dense layer holding the PCA components, so that its output lives in the teacher's space, where the KD losses
compare it with the teacher's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ..outputs import Array

# Dimensions of each row that LayerNorm's weight masks out: mean cancel, +b, -b.
RESERVED_DIMS = 3
SIF_COEFFICIENT = 1e-4  # Model2Vec's default
# LayerNorm's weight on the PCA dimensions. SIF weights shrink frequent tokens, so pooled rows come out about 4x
# shorter than the raw init's (BBC titles, MiniLM: mean norm 1.0 vs 3.7), and a fresh head learns slower on them:
# gold-label fine-tuning, 80 steps at 2e-3, reached 0.67 accuracy at gain 1, 0.75 at gain 4 (raw init: 0.72).
OUTPUT_GAIN = 4.0


def sif_weights(n_tokens: int, coefficient: float = SIF_COEFFICIENT) -> Array:
    """SIF weights a / (a + p_r) of the tokens of ranks r = 1..n, p_r being Zipf's law 1/(r+1), normalised
    (Arora et al., 2017, "A simple but tough-to-beat baseline for sentence embeddings"; Model2Vec's
    `compute_weights`). Frequent (low-rank) tokens weigh less. Shape [n], values in (0, 1).

    >>> [round(float(w), 4) for w in sif_weights(3, 0.5)]
    [0.52, 0.619, 0.6842]
    """
    if n_tokens < 1 or not 0 < coefficient < 1:
        raise ValueError(f"sif_weights needs n_tokens >= 1 and 0 < coefficient < 1, got {n_tokens}, {coefficient}")
    inv_rank = 1.0 / np.arange(2, n_tokens + 2)
    proba = inv_rank / inv_rank.sum()
    weights: Array = coefficient / (coefficient + proba)
    return weights


def layer_norm_rows(z: Array, width: int) -> tuple[Array, float]:
    """Rows x [N, width] such that LayerNorm(x) (biased variance, eps ~ 0) equals [s*z, 0...] on its first
    z.shape[1] dimensions: each row is [s*z, 0..., -s*sum(z), b, -b] with b chosen so that its mean is 0 and its
    variance exactly 1. s (returned) is one scale for all rows, the largest for which b is real.
    Raises ValueError when z leaves fewer than RESERVED_DIMS free dimensions.

    >>> x, s = layer_norm_rows(np.array([[3.0, 0.0], [0.0, 1.0]]), 5)
    >>> round(s, 4), x.round(4).tolist()
    (0.527, [[1.5811, 0.0, -1.5811, 0.0, -0.0], [0.0, 0.527, -0.527, 1.4907, -1.4907]])
    """
    n, d = z.shape
    if d + RESERVED_DIMS > width:
        raise ValueError(f"{d} dimensions plus {RESERVED_DIMS} reserved do not fit a width of {width}")
    load = (z**2).sum(axis=1) + z.sum(axis=1) ** 2  # sum of squares of [z, -sum(z)]
    scale = float(np.sqrt(width / max(float(load.max()), 1e-12)))
    x = np.zeros((n, width), dtype=np.float64)
    x[:, :d] = scale * z
    x[:, -3] = -scale * z.sum(axis=1)
    ballast = np.sqrt(np.clip(width - scale**2 * load, 0.0, None) / 2.0)
    x[:, -2], x[:, -1] = ballast, -ballast
    return x, scale


@dataclass(frozen=True)
class StaticTable:
    """A static student's start: `word` [vocab, width] rows by the student's token ids, `norm_weight` [width]
    (OUTPUT_GAIN on the PCA dimensions, 0 elsewhere), and `back` [teacher width, width], the map from a pooled
    row to the teacher's space (PCA components / (scale * OUTPUT_GAIN))."""

    word: Array
    norm_weight: Array
    back: Array


def static_table(
    tokens: list[str], vectors: Array, token_ids: Mapping[str, int], vocab_size: int, width: int,
    silent_ids: Collection[int] = (),
) -> StaticTable:
    """The Model2Vec table of a static student of `width` over a tokenizer (`token_ids`, `vocab_size` rows).

    tokens / vectors [V, D]: the teacher's output for each token alone, in the distiller's vocabulary order
    (its rank order for the SIF weights). PCA keeps min(width - RESERVED_DIMS, D, V - 1) components. Ids
    absent from `tokens`, and `silent_ids` (special tokens, which Model2Vec never adds to a sentence), get a
    row that LayerNorm turns into zeros: they do not move the pooled direction.
    """
    dims = min(width - RESERVED_DIMS, vectors.shape[1], len(tokens) - 1)
    if dims < 1:
        raise ValueError(f"a static student of width {width} has no room for Model2Vec dimensions")
    pca = PCA(n_components=dims, svd_solver="full").fit(vectors.astype(np.float64))
    z = pca.transform(vectors.astype(np.float64)) * sif_weights(len(tokens))[:, None]
    rows = np.zeros((vocab_size, dims))
    for token, row in zip(tokens, z, strict=True):
        i = token_ids.get(token)
        if i is not None and i < vocab_size and i not in silent_ids:
            rows[i] = row
    word, scale = layer_norm_rows(rows, width)
    norm_weight = np.zeros(width)
    norm_weight[:dims] = OUTPUT_GAIN
    back = np.zeros((vectors.shape[1], width))
    back[:, :dims] = pca.components_.T / (scale * OUTPUT_GAIN)
    return StaticTable(word.astype(np.float32), norm_weight.astype(np.float32), back.astype(np.float32))


def teacher_vocabulary(
    encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: str | None = None
) -> tuple[list[str], Array]:
    """Each vocabulary token passed alone through the teacher encoder, mean-pooled, by the `model2vec`
    library (no PCA and no weighting there: `static_table` does both). Returns the tokens in the library's
    order and their vectors [V, hidden] (float32). Minutes on a CPU for a 30k vocabulary. Raises ValueError
    for a slow (Python) tokenizer, which the library cannot read."""
    from model2vec.distill import distill_from_model

    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ValueError(f"init model2vec needs a fast (Rust) tokenizer; the teacher has {type(tokenizer).__name__}")
    static = distill_from_model(encoder, tokenizer, device=device, pca_dims=None, sif_coefficient=None,
                                quantize_to="float32")
    vocab = static.tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    return tokens, np.asarray(static.embedding, dtype=np.float32)


def _embedding_parts(encoder: PreTrainedModel) -> tuple[nn.Embedding, list[nn.Embedding], nn.LayerNorm]:
    """The token table, the other (position, token type) tables and the LayerNorm of a static encoder."""
    word = encoder.get_input_embeddings()
    module = getattr(encoder, "embeddings", None)
    norms = [m for m in module.modules() if isinstance(m, nn.LayerNorm)] if module is not None else []
    if not isinstance(word, nn.Embedding) or module is None or len(norms) != 1:
        raise ValueError(f"init model2vec needs a BERT-like embeddings module (token tables then one LayerNorm); "
                         f"{type(encoder).__name__} has another shape: use init teacher-embeddings")
    others = [m for m in module.modules() if isinstance(m, nn.Embedding) and m is not word]
    return word, others, norms[0]


@torch.no_grad()
def model2vec_init(
    student: PreTrainedModel, teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> torch.Tensor:
    """Overwrite the embeddings of a 0-layer `student` encoder with the Model2Vec table distilled from the
    `teacher` encoder (same tokenizer): its pooled output is then Model2Vec's sentence vector (up to scale).
    Position and token-type tables are zeroed (Model2Vec is a bag of tokens). Returns `back` [teacher hidden,
    student hidden], the linear map from the pooled output to the teacher's space. Raises ValueError for an
    encoder with layers or of another shape."""
    if int(student.config.num_hidden_layers) != 0:
        raise ValueError("init model2vec is for static students (numLayers 0)")
    word, others, norm = _embedding_parts(student)
    tokens, vectors = teacher_vocabulary(teacher, tokenizer, device=str(next(teacher.parameters()).device))
    table = static_table(tokens, vectors, tokenizer.get_vocab(), word.num_embeddings, word.embedding_dim,
                         set(tokenizer.all_special_ids))
    word.weight.copy_(torch.from_numpy(table.word))
    for other in others:
        other.weight.zero_()
    norm.weight.copy_(torch.from_numpy(table.norm_weight))
    if norm.bias is not None:
        norm.bias.zero_()
    return torch.from_numpy(table.back)

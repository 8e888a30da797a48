"""The compliance conditions of issue #1017 (challenge-spec §1.5), each a measured check.

Every check returns `Outcome` rows (condition, method, passed, detail) for the table
`pgolf check` prints:

- C1 by perturbation: the tokens at positions >= t are replaced (every later document
  included); each scored distribution of a target at position <= t must stay bitwise
  equal (CPU; a tolerance elsewhere). BOS tokens are kept where they are, so a mode's
  document-dependent batching (length sorting, which §1.5 allows) stays the same and the
  comparison can be exact.
- C1 in scoring order (frontier-spec F1.7): the documents the mode scores from the k-th on are
  changed; the distributions of the documents scored before them must stay equal. A state kept
  across documents (the n-gram tilt, global TTT) built in another order than the scoring one
  fails here, also where the stream-order check cannot see it.
- C2: at sampled positions the full-vocabulary probabilities sum to 1, and the loss the
  mode scored equals −log p(target) under that distribution.
- C3: the mode's score ledger (`pgolf.metric.ledger`): no update read a position before
  it was scored.
- C4: every target scored exactly once; the eval's stream and byte totals equal the
  canonical ones (the exact-named val shards; the UTF-8 bytes of the decoded documents,
  an independent count from the tokenizer: the §3.3 bytes/token invariant).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pgolf.check.modes import EvalMode, Scored
from pgolf.data import caseops_codec, shards
from pgolf.data.tokenizer import IDENTITY, Tokenizer
from pgolf.metric.ledger import ScoreLedger
from pgolf.metric.ledger_audit import c3_violations, reads


@dataclass(frozen=True)
class Outcome:
    condition: str
    method: str
    passed: bool
    detail: str


def run_mode(mode: EvalMode, model: nn.Module, tokens: Tensor) -> Scored:
    return mode.score(copy.deepcopy(model), tokens)  # an adapting mode must not carry state between runs


# -- C1 --------------------------------------------------------------------------------------

def perturb_from(tokens: Tensor, t: int, bos_id: int, vocab_size: int, generator: torch.Generator) -> Tensor:
    """Every non-BOS token at positions >= t replaced by a different non-BOS token."""
    out = tokens.clone()
    tail = out[t:].long()
    keep = tail == bos_id
    rank = tail - (tail > bos_id).long()  # index among the vocab_size - 1 non-BOS ids
    shift = torch.randint(1, vocab_size - 1, tail.shape, generator=generator)
    new = (rank + shift) % (vocab_size - 1)
    new = new + (new >= bos_id).long()
    out[t:] = torch.where(keep, tail, new).to(out.dtype)
    return out


def cut_points(tokens: Tensor, bos_id: int, count: int) -> list[int]:
    """Evenly spread cut positions, plus the first token of a document in the middle (a leak
    across a BOS shows first there)."""
    n = tokens.numel()
    points = {max(1, n * (i + 1) // (count + 1)) for i in range(count)}
    bos = torch.nonzero(tokens[1:-1] == bos_id).flatten() + 1  # BOS with a token after it
    if bos.numel():
        points.add(int(bos[bos.numel() // 2]) + 1)
    return sorted(points)


def check_c1(mode: EvalMode, model: nn.Module, tokens: Tensor, bos_id: int, vocab_size: int, base: Scored,
             cuts: int = 4, tolerance: float = 0.0, seed: int = 0) -> Outcome:
    gen = torch.Generator().manual_seed(seed)
    order = torch.argsort(base.positions, stable=True)
    compared, worst = 0, 0.0
    method = f"perturb x[>=t] at {cuts + 1} cuts, compare p_s for s<=t ({'bitwise' if tolerance == 0 else f'tol {tolerance}'})"
    for t in cut_points(tokens, bos_id, cuts):
        other = run_mode(mode, model, perturb_from(tokens, t, bos_id, vocab_size, gen))
        o_order = torch.argsort(other.positions, stable=True)
        if not torch.equal(base.positions[order], other.positions[o_order]):
            return Outcome("C1", method, False, f"the scoring plan changed when tokens >= {t} changed")
        sel = base.positions[order] <= t
        a, b = base.logprobs[order][sel], other.logprobs[o_order][sel]
        compared += int(sel.sum())
        diff = (a - b).abs()
        diff = torch.where(torch.isnan(diff), torch.inf, diff)
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
        if diff.numel() and float(diff.max()) > tolerance:
            row = int(torch.nonzero(diff.amax(dim=1) > tolerance)[0])
            p = int(base.positions[order][sel][row])
            return Outcome("C1", method, False,
                           f"changing tokens >= {t} changed the distribution at position {p} (max |dlogp| {float(diff.max()):.3g})")
    return Outcome("C1", method, True, f"{compared:,} distributions unchanged (max |dlogp| {worst:.3g})")


def scoring_rank_of_documents(base: Scored, tokens: Tensor, bos_id: int) -> tuple[Tensor, Tensor]:
    """(document start positions, each document's rank in the mode's scoring order): documents split
    at BOS (a document's targets run to the next BOS), ranked by when their first target was scored."""
    starts = torch.nonzero(tokens == bos_id).flatten()
    if starts.numel() == 0 or int(starts[0]) != 0:
        starts = torch.cat([torch.zeros(1, dtype=torch.int64), starts])
    doc = torch.searchsorted(starts, base.positions - 1, right=True) - 1
    first = torch.full((starts.numel(),), base.positions.numel(), dtype=torch.int64)
    first.scatter_reduce_(0, doc, torch.arange(doc.numel()), reduce="amin")
    rank = torch.empty_like(first)
    rank[torch.argsort(first, stable=True)] = torch.arange(first.numel())
    return starts, rank


def check_c1_scoring_order(mode: EvalMode, model: nn.Module, tokens: Tensor, bos_id: int, vocab_size: int,
                           base: Scored, cuts: int = 4, tolerance: float = 0.0, seed: int = 0) -> Outcome:
    """C1 in the mode's own document order (frontier-spec F1.7): changing every document scored from
    the k-th on must leave the scores of the documents scored before it unchanged. A state shared
    across documents (the n-gram tilt, global TTT) built in any other order than the scoring one
    fails here, also where the stream-order C1 cannot see it (a reordering mode, a file-order build)."""
    gen = torch.Generator().manual_seed(seed)
    starts, rank = scoring_rank_of_documents(base, tokens, bos_id)
    n_docs = starts.numel()
    method = f"perturb the documents scored from the k-th on (scoring order, F1.7), compare earlier ones at {cuts} cuts"
    if n_docs < 2:
        return Outcome("C1", method, True, "one document: nothing is scored before another")
    doc_of_pos = torch.searchsorted(starts, torch.arange(tokens.numel()), right=True) - 1
    target_doc = torch.searchsorted(starts, base.positions - 1, right=True) - 1
    order = torch.argsort(base.positions, stable=True)
    compared, worst = 0, 0.0
    for k in sorted({max(1, n_docs * (i + 1) // (cuts + 1)) for i in range(cuts)}):
        late = rank[doc_of_pos] >= k  # positions inside the documents scored from the k-th on
        changed = perturb_from(tokens, 0, bos_id, vocab_size, gen)
        other = run_mode(mode, model, torch.where(late, changed, tokens))
        o_order = torch.argsort(other.positions, stable=True)
        if not torch.equal(base.positions[order], other.positions[o_order]):
            return Outcome("C1", method, False, f"the scoring plan changed when documents ranked >= {k} changed")
        sel = rank[target_doc[order]] < k
        diff = (base.logprobs[order][sel] - other.logprobs[o_order][sel]).abs()
        diff = torch.where(torch.isnan(diff), torch.inf, diff)
        compared += int(sel.sum())
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
        if diff.numel() and float(diff.max()) > tolerance:
            p = int(base.positions[order][sel][int(torch.nonzero(diff.amax(dim=1) > tolerance)[0])])
            return Outcome("C1", method, False, f"changing the documents scored from the {k}-th on changed the "
                                                f"distribution at position {p}, scored before them "
                                                f"(max |dlogp| {float(diff.max()):.3g})")
    return Outcome("C1", method, True, f"{compared:,} distributions unchanged (max |dlogp| {worst:.3g})")


# -- C2 --------------------------------------------------------------------------------------

def check_c2(base: Scored, tokens: Tensor, samples: int = 256, atol: float = 1e-5, seed: int = 0) -> list[Outcome]:
    gen = torch.Generator().manual_seed(seed)
    m = base.positions.numel()
    idx = torch.randperm(m, generator=gen)[:samples]
    lp = base.logprobs[idx].double()
    sums = lp.exp().sum(dim=1)
    err = float((sums - 1).abs().max())
    norm = Outcome("C2", f"sum of exp(logp) over all {lp.shape[1]} ids at {idx.numel()} sampled positions",
                   err <= atol, f"max |sum - 1| = {err:.2e} (tol {atol:g})")
    targets = tokens[base.positions[idx]].long()
    gold = -lp.gather(1, targets[:, None]).squeeze(1)
    gap = float((gold - base.nll[idx].double()).abs().max())
    scored = Outcome("C2", "scored loss = -log p(target) under that distribution", gap <= 1e-4,
                     f"max |loss + log p(target)| = {gap:.2e} (tol 1e-4)")
    return [norm, scored]


# -- C3 --------------------------------------------------------------------------------------

def check_c3(ledger: ScoreLedger) -> Outcome:
    total, found = c3_violations(ledger)
    method = f"score ledger: {ledger.updates} updates, each read only positions scored before it"
    if ledger.updates == 0:
        return Outcome("C3", method, True, "no adaptation: no update exists")
    if total == 0:
        return Outcome("C3", method, True, f"{reads(ledger):,} "
                                           "reads, all of scored positions")
    v = found[0]
    when = "never scored" if v.scored_after < 0 else f"scored after {v.scored_after} updates"
    return Outcome("C3", method, False, f"{total:,} reads before scoring; first: update {v.update} read position "
                                        f"{v.position} ({when})")


# -- C4 --------------------------------------------------------------------------------------

def check_coverage(base: Scored, n_tokens: int) -> Outcome:
    counts = torch.bincount(base.positions, minlength=n_tokens)
    problems = []
    if counts.numel() > n_tokens:
        problems.append(f"positions past the stream's end ({counts.numel() - 1})")
    counts = counts[:n_tokens]
    if int(counts[0]):
        problems.append("position 0 (the first BOS) scored")
    missing = torch.nonzero(counts[1:] == 0).flatten() + 1
    twice = torch.nonzero(counts[1:] > 1).flatten() + 1
    if missing.numel():
        problems.append(f"{missing.numel():,} targets never scored (first {int(missing[0])})")
    if twice.numel():
        problems.append(f"{twice.numel():,} targets scored more than once (first {int(twice[0])}, "
                        f"{int(counts[twice[0]])} times)")
    return Outcome("C4", f"each of the {n_tokens - 1:,} targets scored exactly once (coverage count)",
                   not problems, "; ".join(problems) or f"{base.positions.numel():,} scores, one per target")


def canonical_val_tokens(data_dir: str | Path) -> np.ndarray:
    """The val stream as the challenge names it: fineweb_val_NNNNNN.bin only (spec §2.3)."""
    return shards.load_split(data_dir, "val")


def decoded_bytes(tokens: np.ndarray, tokenizer: Tokenizer) -> int:
    """UTF-8 bytes of the original text of each document, from the tokenizer's own decode
    (CaseOps text is decoded back to the original), independent of any byte LUT or sidecar."""
    tokens = np.asarray(tokens)
    bos = tokenizer.bos_id
    starts = np.flatnonzero(tokens == bos).tolist()
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    docs = [tokens[a + (tokens[a] == bos):b].tolist() for a, b in zip(starts, [*starts[1:], tokens.size])]
    texts = tokenizer.sp.decode(docs)
    if tokenizer.transform != IDENTITY:
        texts = [caseops_codec.decode_caseops(t) for t in texts]
    return sum(len(t.encode("utf-8")) for t in texts)


def check_totals(tokens: Tensor, position_bytes: Tensor, data_dir: str | Path, tokenizer: Tokenizer) -> list[Outcome]:
    """The eval's stream and bytes against the canonical files and the tokenizer's decode."""
    canon = canonical_val_tokens(data_dir)
    n_eval, n_canon = tokens.numel(), canon.size
    same = n_eval == n_canon and np.array_equal(tokens.cpu().numpy().astype(np.int64), canon.astype(np.int64))
    stream = Outcome("C4", "eval's val stream = the exact-named val shards (token count and ids)", same,
                     f"{n_eval - 1:,} targets" if same else
                     f"eval stream has {n_eval:,} tokens, fineweb_val_NNNNNN.bin hold {n_canon:,}"
                     + ("" if n_eval != n_canon else " (ids differ)"))
    counted = int(position_bytes[1:].sum())
    truth = decoded_bytes(canon, tokenizer)
    bpt_eval, bpt_true = counted / max(n_eval - 1, 1), truth / max(n_canon - 1, 1)
    bytes_ok = Outcome("C4", "bytes/token = UTF-8 bytes of the decoded documents / targets (spec 3.3)",
                       same and counted == truth,
                       f"{counted:,} bytes counted, {truth:,} decoded; bytes/token {bpt_eval:.6f} vs {bpt_true:.6f}")
    return [stream, bytes_ok]


def check_scored_bytes(base: Scored, position_bytes: Tensor) -> Outcome:
    """The bytes the mode's scores carry equal the full stream's."""
    scored = int(position_bytes[base.positions].sum())
    full = int(position_bytes[1:].sum())
    return Outcome("C4", "bytes of the scored targets = bytes of the full stream", scored == full,
                   f"{scored:,} scored vs {full:,}")

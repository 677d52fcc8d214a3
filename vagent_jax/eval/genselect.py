"""GenSelect (Toshniwal et al., arXiv 2507.17797): the model itself picks the best of N solutions.

Each round shows the model the problem and K candidates (a random permutation of the N samples,
truncated to K), the model ends with "Judgment: IDX" (IDX = 0-based position in the prompt), and the
last such match is its pick; a missing or out-of-range index becomes a uniformly random pick. The
answers of the picked solutions are majority-voted over rounds. The model is any callable
prompt -> text, so tests pass a fake and the eval loop passes the decode engine.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from vagent_jax.eval.estimators import maj_at_k, majority_vote, pass_at_k

JUDGMENT_RE = re.compile(r"Judgment:\s*\**\s*\[?\s*(-?\d+)")


def build_genselect_prompt(problem: str, candidates: Sequence[str]) -> str:
    """The comparison prompt: the problem, the candidates labelled "Solution 0".."Solution K-1", and
    the instruction to finish with "Judgment: IDX"."""
    if not candidates:
        raise ValueError("build_genselect_prompt: candidates is empty")
    parts = [
        "You are given a math problem and several candidate solutions. Compare them carefully, check "
        "their reasoning and final answers, and decide which solution is most likely correct.",
        f"Problem:\n{problem}",
    ]
    for i, text in enumerate(candidates):
        parts.append(f"Solution {i}:\n{text}")
    parts.append(
        f"Analyse the solutions, then end your reply with one line of the form \"Judgment: IDX\", where IDX "
        f"is the number (0 to {len(candidates) - 1}) of the best solution."
    )
    return "\n\n".join(parts)


def parse_judgment(text: str, num_candidates: int, rng: np.random.Generator) -> tuple[int, bool]:
    """(index, valid): the last "Judgment: IDX" in text if 0 <= IDX < num_candidates, else a random
    index drawn from rng with valid=False."""
    if num_candidates < 1:
        raise ValueError(f"parse_judgment: num_candidates must be >= 1, got {num_candidates}")
    matches = JUDGMENT_RE.findall(text)
    if matches:
        idx = int(matches[-1])
        if 0 <= idx < num_candidates:
            return idx, True
    return int(rng.integers(num_candidates)), False


@dataclass(frozen=True)
class GenSelectResult:
    """One problem's GenSelect outcome: voted answer, per-round picks (indices into the N solutions)."""

    answer: Hashable | None
    picks: tuple[int, ...]
    invalid_judgments: int


def genselect(
    problem: str,
    solutions: Sequence[str],
    answers: Sequence[Hashable | None],
    judge: Callable[[str], str],
    *,
    rng: np.random.Generator,
    k: int = 8,
    num_rounds: int = 8,
) -> GenSelectResult:
    """Run num_rounds comparisons of min(k, N) randomly permuted solutions and majority-vote the
    picked solutions' answers (ties: the answer picked in the earliest round)."""
    n = len(solutions)
    if n == 0 or len(answers) != n:
        raise ValueError(f"genselect: need N >= 1 solutions and one answer each, got {n} solutions, {len(answers)} answers")
    if k < 1 or num_rounds < 1:
        raise ValueError(f"genselect: k and num_rounds must be >= 1, got k={k}, num_rounds={num_rounds}")
    picks: list[int] = []
    invalid = 0
    for _ in range(num_rounds):
        shown = rng.permutation(n)[: min(k, n)]
        reply = judge(build_genselect_prompt(problem, [solutions[i] for i in shown]))
        if not isinstance(reply, str):
            raise ValueError(f"genselect: judge returned {type(reply).__name__}, expected the model's text")
        idx, valid = parse_judgment(reply, len(shown), rng)
        invalid += not valid
        picks.append(int(shown[idx]))
    return GenSelectResult(majority_vote([answers[i] for i in picks]), tuple(picks), invalid)


def genselect_report(
    problems: Sequence[str],
    solutions: Sequence[Sequence[str]],
    answers: Sequence[Sequence[Hashable | None]],
    labels: Sequence[Sequence[bool]],
    judge: Callable[[str], str],
    *,
    rng: np.random.Generator,
    k: int = 8,
    num_rounds: int = 8,
) -> dict[str, float]:
    """Mean over problems of pass@1, maj@N, GenSelect@N and pass@N (the upper bound), plus the
    fraction of invalid judgments. labels[j][i] says whether solution i of problem j is correct; the
    voted answer scores with the label of the first solution that gave it."""
    m = len(problems)
    if m == 0 or not (len(solutions) == len(answers) == len(labels) == m):
        raise ValueError("genselect_report: problems, solutions, answers and labels need the same non-zero length")
    rows = []
    invalid = rounds = 0
    for j in range(m):
        if not (len(solutions[j]) == len(answers[j]) == len(labels[j])):
            raise ValueError(f"genselect_report: problem {j} has mismatched solutions/answers/labels lengths")
        n, c = len(labels[j]), int(sum(bool(x) for x in labels[j]))
        res = genselect(problems[j], solutions[j], answers[j], judge, rng=rng, k=k, num_rounds=num_rounds)
        picked = 0.0 if res.answer is None else float(bool(labels[j][list(answers[j]).index(res.answer)]))
        rows.append((pass_at_k(n, c, 1), maj_at_k(answers[j], n, labels=labels[j]), picked, float(c > 0)))
        invalid += res.invalid_judgments
        rounds += num_rounds
    mean = np.mean(np.asarray(rows), axis=0)
    return {
        "pass@1": float(mean[0]),
        "maj@N": float(mean[1]),
        "genselect@N": float(mean[2]),
        "pass@N": float(mean[3]),
        "invalid_judgment_rate": invalid / rounds,
    }

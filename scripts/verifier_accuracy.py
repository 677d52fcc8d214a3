"""Per-rule accuracy of the math verifier on its labelled set, next to plain math-verify on the same set.

Cases: tests/data/verifier_cases.jsonl (answer text, reference, mode, expected verdict, rule name; the
rules are stated in docs/verifier.md). Two verifiers judge every case:
  ours         vagent_jax.envs.math_verifier.verify_math(answer, reference, mode)
  math-verify  math_verify.verify(parse("$" + reference + "$"), parse(answer)), the library used plainly
               (it has no simplest-form mode, so in that mode it judges equivalence only)
For each rule: cases, correct verdicts, false accepts (FP: verdict true, label false) and false rejects
(FN: verdict false, label true). Prints a table, or with --json one JSON object.

Usage: python scripts/verifier_accuracy.py [--cases tests/data/verifier_cases.jsonl] [--json]
"""
from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Callable

from math_verify import parse, verify

from vagent_jax.envs.math_verifier import verify_math

DEFAULT_CASES = Path(__file__).resolve().parent.parent / "tests" / "data" / "verifier_cases.jsonl"


def plain_math_verify(answer: str, reference: str, mode: str) -> bool:
    """math-verify as a user would call it: reference wrapped in $...$, the answer text as it is."""
    try:
        return bool(verify(parse(f"${reference}$"), parse(answer)))
    except Exception:  # the library raising is a reject, as in ours
        return False


def score(cases: list[dict], judge: Callable[[str, str, str], bool]) -> dict:
    """Per-rule and total counts of cases, correct verdicts, false accepts and false rejects."""
    rows: dict[str, dict[str, int]] = defaultdict(lambda: {"cases": 0, "correct": 0, "fp": 0, "fn": 0})
    for c in cases:
        got = judge(c["answer"], c["reference"], c["mode"])
        for key in (c["rule"], "TOTAL"):
            row = rows[key]
            row["cases"] += 1
            row["correct"] += got == c["expected"]
            row["fp"] += got and not c["expected"]
            row["fn"] += (not got) and c["expected"]
    return {k: dict(v, accuracy=round(v["correct"] / v["cases"], 4)) for k, v in rows.items()}


def table(ours: dict, plain: dict) -> str:
    """Markdown table: one row per rule, ours then plain math-verify."""
    lines = ["| rule | cases | ours acc | ours FP | ours FN | math-verify acc | math-verify FP | math-verify FN |",
             "|---|---|---|---|---|---|---|---|"]
    for rule in sorted(ours, key=lambda r: (r == "TOTAL", r)):
        o, p = ours[rule], plain[rule]
        lines.append(f"| {rule} | {o['cases']} | {o['accuracy']:.3f} | {o['fp']} | {o['fn']} | "
                     f"{p['accuracy']:.3f} | {p['fp']} | {p['fn']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=Path, default=DEFAULT_CASES)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    cases = [json.loads(line) for line in args.cases.read_text().splitlines() if line.strip()]
    for i, c in enumerate(cases):
        missing = {"answer", "reference", "mode", "expected", "rule"} - set(c)
        if missing:
            raise SystemExit(f"{args.cases}: case {i + 1} lacks {sorted(missing)}")
    ours = score(cases, verify_math)
    plain = score(cases, plain_math_verify)
    if args.json:
        print(json.dumps({"cases": str(args.cases), "n": len(cases), "ours": ours, "math_verify": plain}))
    else:
        print(table(ours, plain))


if __name__ == "__main__":
    main()

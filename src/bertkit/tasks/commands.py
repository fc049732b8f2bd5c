"""``bertkit evaluate``: score prediction files with the official definitions, print the JSON.

  bertkit evaluate squad DATA.json predictions.json [--na-prob-file null_odds.json]
  bertkit evaluate nq GOLD.jsonl[.gz] predictions.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bertkit.errors import file_error


def _read_json(path: str | Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise file_error(path, f"cannot read: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise file_error(path, f"not JSON: {e}") from None


def _id_map(path: str, value: Any, numbers: bool) -> dict:
    """Check a {question id: text} (predictions) or {question id: number} (na-probs) JSON object."""
    kind = (int, float) if numbers else str
    if not isinstance(value, dict) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value.values()):
        what = "a number" if numbers else "text"
        raise file_error(path, f"expected a JSON object mapping question ids to {what}")
    return value


def cmd_evaluate_squad(args: argparse.Namespace) -> None:
    """Print the official SQuAD scores of a predictions file as JSON."""
    from bertkit.tasks.squad import load_json
    from bertkit.tasks.squad_eval import evaluate_squad

    dataset = load_json(args.data)
    predictions = _id_map(args.predictions, _read_json(args.predictions), numbers=False)
    na_probs = None
    if args.na_prob_file:
        na_probs = _id_map(args.na_prob_file, _read_json(args.na_prob_file), numbers=True)
    scores = evaluate_squad(dataset, predictions, na_probs, args.na_prob_thresh)
    print(json.dumps(scores, indent=2))


def cmd_evaluate_nq(args: argparse.Namespace) -> None:
    """Print the official NQ scores of a predictions file as JSON."""
    from bertkit.tasks.nq_eval import evaluate_nq, read_nq_gold, read_nq_predictions

    scores = evaluate_nq(read_nq_gold(args.gold), read_nq_predictions(args.predictions))
    print(json.dumps(scores, indent=2))


def add_evaluate_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``evaluate`` (with ``squad`` and ``nq``) on the CLI's subparsers; returns its parser."""
    p = subparsers.add_parser("evaluate", help="score predictions with the official SQuAD / NQ definitions")
    sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    s = sub.add_parser("squad", help="SQuAD v1.1/v2.0 exact match and F1 (evaluate-v1.1.py / evaluate-v2.0.py)")
    s.add_argument("data", metavar="DATA", help="the SQuAD JSON the predictions answer (e.g. dev-v1.1.json)")
    s.add_argument("predictions", metavar="PREDICTIONS", help="predictions.json: {question id: answer text}")
    s.add_argument("--na-prob-file", metavar="F", help="null_odds.json (v2.0): {question id: no-answer score}; "
                   "adds best_exact, best_f1 and their thresholds")
    s.add_argument("--na-prob-thresh", type=float, default=1.0,
                   help="with --na-prob-file: a question scoring above this counts as unanswered (default: 1.0, "
                        "as the official script)")
    s.set_defaults(func=cmd_evaluate_squad)
    n = sub.add_parser("nq", help="Natural Questions long/short answer precision, recall, F1 (nq_eval.py)")
    n.add_argument("gold", metavar="GOLD", help="NQ jsonl (or .jsonl.gz) with the annotations")
    n.add_argument("predictions", metavar="PREDICTIONS", help='predictions.json: {"predictions": [...]}')
    n.set_defaults(func=cmd_evaluate_nq)
    return p


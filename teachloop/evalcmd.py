"""``teachloop eval``: the command line of :mod:`teachloop.evals.bench` (which stays library-only).

Parses the options and calls :func:`teachloop.evals.bench.evaluate`; a ``BenchError`` (a bad
bench name, file or option) is reported by ``teachloop.cli.main`` as one line, exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from teachloop.evals.bench import evaluate, result_table, save_result

__all__ = ["eval_command"]


def eval_command(
    model: Annotated[str, typer.Option(help="checkpoint directory, or 'embedded' "
                                       "(SmolLM2-135M-Instruct)")] = "embedded",
    bench: Annotated[str, typer.Option(help="rg:<family>, heldout:<f1>,<f2>, humaneval, "
                                       "jsonl:PATH, gsm8k, math500, aime (hub sets: cached only)")]
    = "rg:math.rg.chain_sum",
    k: Annotated[int, typer.Option("--k", help="samples per item (pass@k)")] = 4,
    n: Annotated[int, typer.Option("--n", help="number of items")] = 16,
    temperature: Annotated[float, typer.Option(help="sampling temperature (0: greedy)")] = 1.0,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="max new tokens per sample")] = 256,
    seed: Annotated[int, typer.Option(help="item subset and sampling seed")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="write the EvalResult JSON here")] = None,
) -> None:
    """Evaluate a model on a benchmark: pass@1, pass@k and avg@k over k samples per item."""
    from rich.console import Console

    console = Console()
    result = evaluate(model, bench, k=k, n_items=n, temperature=temperature, max_tokens=max_tokens,
                      seed=seed, console=console)
    console.print(result_table([result]))
    if out is not None:
        save_result(result, out)
        console.print(f"[dim]wrote {out}[/]")

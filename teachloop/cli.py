"""The ``teachloop`` command line (typer + rich).

Commands parse their arguments and call an importable function; no algorithm lives here.
User mistakes (a missing run dir, a bad config key, a damaged pool) end in one line on
stderr and exit code 2, never a traceback: ``main()`` maps the project's user-error types.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from teachloop import __version__
from teachloop.config import DEFAULT_PRESET
from teachloop.errors import UserError, user_error_types

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="teachloop",
    help="Teacher-student synthetic curricula for LLM RL: a teacher LLM rewrites problems "
    "into easier and harder variants from student performance summaries; labels come from "
    "execution; a GRPO trainer (TRL) selects by group reward variance (VCRL) and merges "
    "AdaCuRL difficulty buckets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
pool_app = typer.Typer(help="Inspect a run's item pool.", no_args_is_help=True)
app.add_typer(pool_app, name="pool")
from teachloop.generate import generate_command  # noqa: E402
from teachloop.train import train_command  # noqa: E402

from teachloop.evalcmd import eval_command  # noqa: E402
from teachloop.export import export_command  # noqa: E402
from teachloop.report import report_command  # noqa: E402
from teachloop.study import study_command  # noqa: E402

app.command("generate")(generate_command)
app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("export")(export_command)
app.command("report")(report_command)
app.command("study")(study_command)


@app.callback()
def _global_options(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="debug logging (teachloop's loggers at DEBUG, others at INFO)")]
        = False) -> None:
    setup_logging(verbose)


def setup_logging(verbose: bool = False) -> None:
    """Log records through rich on stderr: teachloop's at INFO (DEBUG with --verbose), other
    libraries' at WARNING (INFO with --verbose)."""
    import logging

    from rich.logging import RichHandler

    handler = RichHandler(console=err_console, show_path=verbose, markup=False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        datefmt="[%X]", handlers=[handler], force=True)
    logging.getLogger("teachloop").setLevel(logging.DEBUG if verbose else logging.INFO)


PresetOpt = Annotated[str, typer.Option(
    "--preset", help="a preset from configs/ (quickstart, smoke, ...); '' for the field defaults")]
ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", help="a YAML config file, layered over the preset")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="override one key, e.g. --set teacher.max_turns=3 (repeatable)")]


@app.command()
def version() -> None:
    """Print the teachloop version and the versions of the libraries it builds on."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    console.print(f"teachloop {__version__}")
    for dist in ("trl", "transformers", "torch", "langgraph", "math-verify", "reasoning-gym"):
        try:
            console.print(f"  {dist} {v(dist)}", style="dim")
        except PackageNotFoundError:
            console.print(f"  {dist} (not installed)", style="dim")


@app.command()
def doctor() -> None:
    """Check what to check when something is off: sandbox isolation, embedded model, endpoint, Chromium, libraries."""
    from teachloop.doctor import main as doctor_main

    raise typer.Exit(doctor_main(lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)))


@app.command()
def run(
    preset: PresetOpt = DEFAULT_PRESET,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="run directory (default: run.out)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out after "
                                         "a kill; nothing is lost or done twice")] = False,
    online: Annotated[bool, typer.Option("--online", help="teacher rounds during training "
                                         "every online.every_steps steps, on the items just "
                                         "rolled out")] = False,
    pool: Annotated[Optional[str], typer.Option("--pool", help="a shared pool "
                    "(postgresql://user@host/db) instead of RUN_DIR/pool.sqlite")] = None,
    workers: Annotated[int, typer.Option("--workers", help="teacher stage: N generation worker "
                       "processes on the pool beside this one (0: the in-process loop)")] = 0,
) -> None:
    """The main job, in one resumable run directory: seeds -> teacher turns -> probes ->
    eval before -> curriculum GRPO (VCRL + AdaCuRL) -> eval after -> dataset export -> report.

    Every stage is listed in `teachloop/run.py`; a finished stage is skipped by --resume.
    """
    from teachloop.config import load_config
    from teachloop.run import main as run_main

    overrides = list(set_ or [])
    if out is not None:
        overrides.append(f"run.out={out}")
    if online:
        overrides.append("online.enabled=true")
    if pool is not None:
        overrides.append(f"run.pool={pool}")
    if workers:
        overrides.append(f"run.workers={workers}")
    cfg = load_config(preset, config, overrides)
    run_main(cfg, resume=resume, console=console)


@app.command()
def families() -> None:
    """List the registered task families and whether they offer procedural variants."""
    from teachloop.evals.families import family_names, get_family

    t = Table("family", "variants", "config", box=None)
    for name in family_names():
        fam = get_family(name)
        t.add_row(name, "yes" if fam.supports_variants else "-", type(fam.config).__name__)
    console.print(t)


@app.command("config")
def config_cmd(
    preset: PresetOpt = DEFAULT_PRESET,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    explain: Annotated[bool, typer.Option("--explain", help="list every key with its help")]
    = False,
    schema: Annotated[bool, typer.Option("--schema", help="print the JSON schema of the config "
                                         "tree (for editors validating preset files)")] = False,
) -> None:
    """Resolve and print a configuration (defaults < preset < --config < --set), as
    `teachloop run` with the same options would write it to RUN_DIR/config.yaml."""
    from teachloop.config import all_keys, dump_schema, dump_yaml, load_config

    if schema:
        typer.echo(dump_schema())
        return
    cfg = load_config(preset, config, set_ or [])
    if explain:
        t = Table("key", "value", "help", box=None)
        flat = _flatten(dump_dict(cfg))
        for k, h in all_keys().items():
            t.add_row(k, repr(flat.get(k)), h)
        console.print(t)
    else:
        typer.echo(dump_yaml(cfg), nl=False)  # exactly the text of run's config.yaml


def dump_dict(cfg: object) -> dict:
    from teachloop.config import to_dict

    return to_dict(cfg)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


@pool_app.command("stats")
def pool_stats(
    run_dir: Annotated[Path, typer.Argument(help="a run directory (holding pool.sqlite), "
                                            "a pool file, or a sqlite:/// URL")],
) -> None:
    """Counts by family, direction and turn; rejections; a pass-rate histogram; teacher tokens
    and (with teacher.prices in the run's config) cost."""
    from teachloop.stats import pool_summary, render_summary, run_prices

    store = _open_existing_pool(run_dir)
    prices = run_prices(run_dir) if run_dir.is_dir() else None
    with store:
        render_summary(pool_summary(store, prices), console)


@pool_app.command("show")
def pool_show(
    run_dir: Annotated[Path, typer.Argument(help="run directory or pool")],
    item_id: Annotated[str, typer.Argument(help="item id (a unique prefix is enough)")],
) -> None:
    """One item with its lineage chain back to the seed."""
    from teachloop.stats import render_chain

    with _open_existing_pool(run_dir) as store:
        matches = store.ids_with_prefix(item_id, limit=2)
        if not matches:
            raise UserError(f"no item with id {item_id!r} in {store.path}")
        if len(matches) > 1:
            raise UserError(f"id prefix {item_id!r} is ambiguous; give more characters")
        render_chain(store.chain(matches[0]), console)


def _open_existing_pool(run_dir: Path):
    from teachloop.curriculum.pool import open_pool, resolve_pool_path

    s = str(run_dir)
    if "://" not in s:
        if not run_dir.exists():
            raise UserError(f"run directory not found: {run_dir}")
        path = resolve_pool_path(run_dir)
        if not path.exists():
            raise UserError(f"no pool in {run_dir} (expected {path})")
    return open_pool(s, create=False)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one stderr line and exit code 2."""
    try:
        app(args=argv, prog_name="teachloop")
    except Exception as e:
        if not isinstance(e, user_error_types()):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        err_console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()

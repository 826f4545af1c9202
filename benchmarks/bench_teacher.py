"""The teacher loop's acceptance numbers, measured on the embedded SmolLM2-135M (CPU).

Run: ``python benchmarks/bench_teacher.py [--only llm,server,procedural,yield] [--seeds 8]
[--attempts 8] [--turns 2] [--out DIR]``  (tens of minutes on 2 cores; sections can run alone)

Sections (each a real ``teachloop.generate.main`` run in its own run directory, one loaded
model shared by all of them):

* ``llm``: the llm teacher on the embedded model (teacher and student), >= 8 seeds, >= 2 turns:
  proposals = accepted + rejected (state and pool), which nodes ran, why proposals failed.
* ``server``: the same with the teacher behind a real OpenAI-compatible llama-cpp-python server
  on 127.0.0.1 (serving the same GGUF); the student stays local.
* ``procedural``: the procedural teacher with the progression rule, then with every turn forced
  easier (seeds at ``--easier-level``: level 0 has no easier variant) and forced harder (seeds
  at ``--start-level``), everything kept: share of valid proposals (not rejected before
  probing) and the mean measured pass rate of children vs. their parents per direction.
* ``throughput``: proposals per minute of ``--chains`` chains (``--throughput-family`` seeds,
  sandbox-scored) with teacher AND student behind the loopback llama.cpp server, student
  attempts scored in the event loop (``teacher.score_workers=0``, the code before issue 14)
  vs in a thread pool (``score_workers=8``), alternated ``--reps`` times in this process:
  medians and their ratio.
* ``yield``: single-turn (1 turn x T chains per seed) vs multi-turn (T turns x 1 chain) on the
  same seeds and the same proposal budget, for the procedural and the llm teacher.
* ``chains`` (issue 14): proposals per minute of ``--chains`` chains with every chain in its own
  subgraph (advancing independently) vs the lock-step graph (``build_graph(lockstep=True)``,
  the design before), alternated ``--reps`` times in this process: medians and their ratio.
  No model: the scripted teacher and arithmetic student of tests/loop_helpers.py behind
  injected heavy-tailed latencies (lognormal per call, ``--teacher-latency`` /
  ``--student-latency`` mean seconds, ``--latency-sigma``), so the number isolates the
  scheduling; pool, sandbox validation, dedup, ledger are the real ones. With
  ``--chains-backend server`` teacher and student are the loopback llama.cpp server instead.

Families and levels: the 135M student scores ~0 on most reasoning-gym items; chain_sum and
basic_arithmetic at their lowest knob level (two one-digit terms) are where it has some
success, so those are the defaults (``--families``, ``--start-level``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402

from teachloop.agents.backends import LocalBackend, OpenAIBackend, OpenAIBackendConfig  # noqa: E402
from teachloop.agents.batching import CoalescingBackend  # noqa: E402
from teachloop.curriculum.pool import open_pool  # noqa: E402
from teachloop.evals.families import get_family  # noqa: E402
from teachloop.config import load_config  # noqa: E402
from teachloop.generate import main as generate  # noqa: E402

QUIET = Console(file=open(os.devnull, "w"), width=120)  # noqa: SIM115


def seed_pool(out: Path, families: list[str], n: int, level: int | None, seed: int) -> None:
    """Seeds at a chosen knob level (the run-level config has no knob option)."""
    out.mkdir(parents=True, exist_ok=True)
    store = open_pool(out)
    for name in families:
        fam = get_family(name, start_level=level) if name.startswith("math.rg.") else get_family(name)
        store.insert_many(fam.seeds(n, seed=seed))
    store.close()


def run_generate(out: Path, overrides: list[str], student, teacher=None, *, families: list[str],
                 seeds: int, level: int | None, seed: int = 0, verbose: bool = False):
    seed_pool(out, families, seeds, level, seed)
    fams = "[" + ", ".join(families) + "]"
    cfg = load_config("smoke", None, [f"seeds.families={fams}", "seeds.per_family=0", f"run.seed={seed}",
                                      *overrides])
    t0 = time.perf_counter()
    res = generate(cfg, out=out, console=Console(width=120) if verbose else QUIET, student=student, teacher=teacher)
    res.wall_s = time.perf_counter() - t0
    return res


def _end_of_range(o: dict) -> bool:
    return o["status"] == "rejected" and o["stage"] == "propose" and "end of the knob range" in o["reason"]


def valid_share(res) -> float:
    """Share of proposals that passed parse, validation and dedup (a 'band' rejection is a valid
    item outside the keep band). A procedural turn at the end of the knob range produced no
    variant at all: counted as invalid here, and reported separately by ``end_of_range``."""
    outs = res.state["outcomes"]
    bad = sum(1 for o in outs if o["status"] == "rejected" and o["stage"] != "band")
    return 1 - bad / len(outs) if outs else float("nan")


def valid_share_of_variants(res) -> tuple[float, int]:
    """(valid share among the turns that produced a variant, turns at the end of the range)."""
    outs = res.state["outcomes"]
    made = [o for o in outs if not _end_of_range(o)]
    bad = sum(1 for o in made if o["status"] == "rejected" and o["stage"] != "band")
    return (1 - bad / len(made) if made else float("nan")), len(outs) - len(made)


def direction_means(res) -> dict[str, tuple[float, float, int]]:
    out = {}
    for d in ("easier", "harder"):
        probed = [o for o in res.state["outcomes"] if o["direction"] == d and o.get("p") is not None]
        if probed:
            out[d] = (statistics.mean(o["p"] for o in probed), statistics.mean(o["parent_p"] for o in probed),
                      len(probed))
    return out


def line(label: str, res) -> str:
    return (f"{label:<34} proposals {res.proposals:>3} = accepted {res.accepted:>3} + rejected {res.rejected:>3}"
            f" (pool {res.pool_accepted}+{res.pool_rejected}) "
            f"{'ok' if res.proposals == res.accepted + res.rejected == res.pool_accepted + res.pool_rejected else 'MISMATCH'}"
            f"  {res.wall_s:.0f} s")


def top_reasons(res, k: int = 6) -> str:
    return "\n".join(f"      {n:>3}  {stage}: {reason}" for (stage, reason), n in list(res.reasons.items())[:k])


def _chain_run(args, out: Path, teacher, student, *, lockstep: bool, rep: int) -> tuple[int, float]:
    """One teacher-loop run (math.word seeds, llm teacher, one chain per seed); (proposals, s)."""
    import asyncio

    from teachloop.agents.config import TeacherLoopConfig
    from teachloop.agents.graph import run_loop
    from teachloop.agents.ledger import Ledger
    from teachloop.agents.state import LoopContext
    from teachloop.agents.teacher import PromptLibrary

    out.mkdir(parents=True, exist_ok=True)
    store = open_pool(Path(tempfile.mkdtemp(dir=out)))  # a fresh pool even when --out is reused
    store.insert_many(get_family("math.word").seeds(args.chains, seed=rep))
    cfg = TeacherLoopConfig(kind="llm", max_turns=args.turns, attempts=args.attempts, in_band="harder",
                            families=["math.word"], seed=rep, student_max_tokens=args.student_tokens,
                            teacher_max_tokens=args.teacher_tokens, teacher_temperature=args.teacher_temperature,
                            **({} if args.student_temperature is None else {"student_temperature": args.student_temperature}))
    ctx = LoopContext(config=cfg, store=store, ledger=Ledger(store, "bench"), student=student,
                      teacher=teacher, teacher_name="llm:bench", prompts=PromptLibrary())
    t0 = time.perf_counter()
    state = asyncio.run(run_loop(ctx, "bench", lockstep=lockstep))
    wall = time.perf_counter() - t0
    store.close()
    return len(state["outcomes"]), wall


def bench_chains(args, root: Path) -> dict:
    """Independent chains vs the lock-step graph (see the module docstring, ``chains``)."""
    from loop_helpers import ArithmeticStudent, LatencyBackend, ScriptedTeacher, lognormal_delay, math_proposal

    server = None
    if args.chains_backend == "server":
        from server_utils import start_llama_cpp_server

        from teachloop.agents.embedded import embedded_gguf_path

        server = start_llama_cpp_server(embedded_gguf_path(), root / "chains-server")
        what = f"teacher and student on the loopback llama.cpp server (started in {server.start_seconds:.1f} s)"
    elif args.chains_backend == "vllm":  # batches concurrent requests, unlike llama.cpp's server
        from server_utils import start_vllm_server, vllm_python

        from teachloop.agents.embedded import embedded_model_path

        py = vllm_python()
        if py is None:
            sys.exit("--chains-backend vllm: no vLLM venv (TEACHLOOP_VLLM_PYTHON or ../vllm-venv; "
                     "see tests/test_vllm_server.py)")
        server = start_vllm_server(embedded_model_path(), root / "chains-vllm", python=py)
        what = f"teacher and student on a loopback vLLM CPU server (started in {server.start_seconds:.1f} s)"
    else:
        what = (f"scripted teacher and student with lognormal latencies (mean {args.teacher_latency} s / "
                f"{args.student_latency} s per call, sigma {args.latency_sigma}); no model")
    script = [math_proposal(f"{a} + {b} * {a}") for a, b in zip(range(2, 400), range(7, 405))]
    rates: dict[str, list[float]] = {"lockstep": [], "independent": []}
    try:
        for r in range(args.reps):
            for mode in ("lockstep", "independent"):
                if server is not None:
                    ends = {"base_url": server.base_url, "max_concurrency": args.chains}
                    teacher, student = OpenAIBackend(**ends), OpenAIBackend(**ends)
                else:
                    salt = f"{r}/"  # the same latencies for both modes within a rep
                    teacher = LatencyBackend(ScriptedTeacher(script),
                                             lognormal_delay(args.teacher_latency, args.latency_sigma, salt))
                    student = LatencyBackend(ArithmeticStudent(),
                                             lognormal_delay(args.student_latency, args.latency_sigma, salt))
                n, wall = _chain_run(args, root / f"chains-{mode}-{r}", teacher, student,
                                     lockstep=mode == "lockstep", rep=r)
                rates[mode].append(n / wall * 60)
                retried = ""
                if server is not None:  # HTTP requests beyond the logical calls: the SDK's retries
                    retried = (f" (HTTP retries: teacher {teacher.requests - teacher.calls}, "
                               f"student {student.requests - student.calls})")
                print(f"  rep {r} {mode:<11}: {n} proposals in {wall:.1f} s = {rates[mode][-1]:.1f} per minute"
                      f"{retried}", flush=True)
    finally:
        if server is not None:
            server.stop()
    before, after = statistics.median(rates["lockstep"]), statistics.median(rates["independent"])
    print(f"\n[chains] {args.chains} chains x {args.turns} turns, M={args.attempts}, {what}: median proposals/min "
          f"lock-step {before:.1f}, independent {after:.1f} (ratio {after / before:.2f}x)")
    return {"backend": args.chains_backend, "lockstep": rates["lockstep"], "independent": rates["independent"],
            "ratio": after / before}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="llm,server,procedural,yield")
    ap.add_argument("--families", default="math.rg.chain_sum,math.rg.basic_arithmetic")
    ap.add_argument("--llm-families", default="math.rg.chain_sum,code.deduction")
    ap.add_argument("--start-level", type=int, default=0, help="knob level of the seeds (rg families)")
    ap.add_argument("--easier-level", type=int, default=1,
                    help="seed knob level of the forced-easier run (level 0 has no easier variant)")
    ap.add_argument("--seeds", type=int, default=8, help="seeds per family")
    ap.add_argument("--attempts", type=int, default=8, help="M")
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--student-tokens", type=int, default=48)
    ap.add_argument("--teacher-tokens", type=int, default=256)
    ap.add_argument("--teacher-temperature", type=float, default=0.3)
    ap.add_argument("--yield-kinds", default="procedural,llm")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--chains", type=int, default=8, help="throughput: chains (one seed each)")
    ap.add_argument("--throughput-family", default="code.deduction")
    ap.add_argument("--reps", type=int, default=2, help="throughput: runs per setting (alternated)")
    ap.add_argument("--teacher-latency", type=float, default=0.5, help="chains: mean teacher call latency (s)")
    ap.add_argument("--student-latency", type=float, default=0.1, help="chains: mean student call latency (s)")
    ap.add_argument("--latency-sigma", type=float, default=1.0, help="chains: sigma of the lognormal latency")
    ap.add_argument("--chains-backend", default="scripted", choices=("scripted", "server", "vllm"),
                    help="chains: scripted latencies, the loopback llama.cpp server (one request "
                         "at a time), or a loopback vLLM CPU server (batches concurrent requests)")
    ap.add_argument("--student-temperature", type=float, default=None,
                    help="chains: student sampling temperature (0 with --teacher-temperature 0: the same work "
                         "in both modes on the server)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here too")
    ap.add_argument("--verbose", action="store_true", help="print each run's report")
    args = ap.parse_args()
    only = set(args.only.split(","))
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_teacher_"))
    root.mkdir(parents=True, exist_ok=True)
    families = args.families.split(",")
    M, T = args.attempts, args.turns
    common = [f"probe.attempts={M}", f"student.max_tokens={args.student_tokens}",
              f"teacher.model.max_tokens={args.teacher_tokens}",
              f"teacher.model.temperature={args.teacher_temperature}"]
    numbers: dict = {"args": {k: str(v) for k, v in vars(args).items()}}

    if "chains" in only:
        numbers["chains"] = bench_chains(args, root)
        if only == {"chains"}:
            if args.json:
                args.json.write_text(json.dumps(numbers, indent=2, default=str))
            return

    local = LocalBackend(torch_threads=args.threads)
    t0 = time.perf_counter()
    local.load()
    print(f"embedded model (teacher and student) loaded in {time.perf_counter() - t0:.1f} s ({local.model_path.name}); runs in {root}")
    model = CoalescingBackend(local, window_s=0.05)

    # ------------------------------------------------------------------ llm teacher, embedded
    if "llm" in only:
        fams = args.llm_families.split(",")
        res = run_generate(root / "llm", [*common, "teacher.kind=llm", f"teacher.max_turns={T}",
                                          "teacher.in_band=harder"],
                           model, model, families=fams, seeds=args.seeds, level=args.start_level,
                           verbose=args.verbose)
        print(f"\n[llm teacher, embedded] {len(fams)} families x {args.seeds} seeds, {T} turns, M={M}")
        print("  " + line("embedded teacher", res))
        print(f"  nodes run: {json.dumps(res.visits, sort_keys=True)}")
        print(f"  top rejection reasons:\n{top_reasons(res)}")
        print(f"  batching: {model.requests} requests -> {model.calls} generate calls "
              f"(mean {statistics.mean(model.batch_sizes):.1f} conversations per call)")
        numbers["llm"] = {"proposals": res.proposals, "accepted": res.accepted, "rejected": res.rejected,
                          "visits": res.visits, "wall_s": res.wall_s,
                          "reasons": {f"{s}: {r}": n for (s, r), n in res.reasons.items()}}

    # ------------------------------------------------------------------ llm teacher, loopback server
    if "server" in only:
        from server_utils import llama_cpp_server_available, start_llama_cpp_server

        from teachloop.agents.embedded import embedded_gguf_path

        if not llama_cpp_server_available():
            print("\n[llm teacher, loopback server] skipped: llama-cpp-python[server] not installed")
        else:
            server = start_llama_cpp_server(embedded_gguf_path(), root / "server")
            try:
                teacher = OpenAIBackend(OpenAIBackendConfig(base_url=server.base_url, max_concurrency=8))
                teacher.check()
                fams = args.llm_families.split(",")
                res = run_generate(root / "server", [*common, "teacher.kind=llm", f"teacher.max_turns={T}",
                                                     "teacher.in_band=harder"],
                                   model, teacher, families=fams, seeds=args.seeds, level=args.start_level,
                                   verbose=args.verbose)
                print(f"\n[llm teacher, loopback llama.cpp server, started in {server.start_seconds:.1f} s] "
                      f"{len(fams)} families x {args.seeds} seeds, {T} turns, M={M}")
                print("  " + line("server teacher", res))
                print(f"  nodes run: {json.dumps(res.visits, sort_keys=True)}")
                print(f"  top rejection reasons:\n{top_reasons(res)}")
                numbers["server"] = {"proposals": res.proposals, "accepted": res.accepted,
                                     "rejected": res.rejected, "visits": res.visits, "wall_s": res.wall_s}
            finally:
                server.stop()

    # ------------------------------------------------------------------ throughput, loopback server
    if "throughput" in only:
        from server_utils import llama_cpp_server_available, start_llama_cpp_server

        from teachloop.agents.embedded import embedded_gguf_path

        if not llama_cpp_server_available():
            print("\n[throughput] skipped: llama-cpp-python[server] not installed")
        else:
            server = start_llama_cpp_server(embedded_gguf_path(), root / "tp-server")
            try:
                ends = {"base_url": server.base_url, "max_concurrency": 8}
                rates: dict[int, list[float]] = {0: [], 8: []}
                for r in range(args.reps):
                    for workers in (0, 8):
                        teacher, student = OpenAIBackend(**ends), OpenAIBackend(**ends)
                        teacher.check()
                        student.check()
                        res = run_generate(root / f"tp-{workers}-{r}",
                                           [*common, "teacher.kind=llm", f"teacher.max_turns={T}",
                                            "teacher.in_band=harder", f"teacher.score_workers={workers}"],
                                           student, teacher, families=[args.throughput_family],
                                           seeds=args.chains, level=None, seed=r, verbose=args.verbose)
                        rates[workers].append(res.proposals / res.wall_s * 60)
                        print(f"  rep {r} score_workers={workers}: {res.proposals} proposals in "
                              f"{res.wall_s:.1f} s = {rates[workers][-1]:.2f} per minute")
                before, after = statistics.median(rates[0]), statistics.median(rates[8])
                print(f"\n[throughput] {args.chains} chains of {args.throughput_family}, {T} turns, M={M}, "
                      f"teacher and student on the loopback llama.cpp server: median proposals/min "
                      f"scored in the event loop {before:.2f}, in a thread pool {after:.2f} "
                      f"(ratio {after / before:.2f}x)")
                numbers["throughput"] = {"inline": rates[0], "threads": rates[8], "ratio": after / before}
            finally:
                server.stop()

    # ------------------------------------------------------------------ procedural teacher
    if "procedural" in only:
        print(f"\n[procedural teacher] {', '.join(families)} at knob level {args.start_level}, "
              f"{args.seeds} seeds each, {T} turns, M={M}")
        numbers["procedural"] = {}
        everything = ["teacher.keep_min_p=0.0", "teacher.keep_max_p=1.0"]  # measure all children
        for label, level, extra in (
                ("progression rule", args.start_level, ["teacher.in_band=harder"]),
                (f"forced easier (level {args.easier_level})", args.easier_level,
                 ["teacher.force_direction=easier", *everything]),
                (f"forced harder (level {args.start_level})", args.start_level,
                 ["teacher.force_direction=harder", *everything])):
            res = run_generate(root / f"proc-{label.split(' (')[0].replace(' ', '-')}",
                               [*common, "teacher.kind=procedural", f"teacher.max_turns={T}", *extra],
                               model, families=families, seeds=args.seeds, level=level,
                               verbose=args.verbose)
            means = direction_means(res)
            v2, eor = valid_share_of_variants(res)
            print("  " + line(label, res) + f"  valid {valid_share(res):.0%} of proposals, "
                  f"{v2:.0%} of the variants made ({eor} turns at the end of the knob range)")
            for d, (kid, parent, n) in means.items():
                sign = ">" if kid > parent else "<" if kid < parent else "="
                print(f"      {d:<7} children mean p {kid:.3f} {sign} parents {parent:.3f}  ({n} probed)")
            numbers["procedural"][label] = {"valid_share": valid_share(res), "valid_share_of_variants": v2,
                                            "end_of_range": eor, "proposals": res.proposals,
                                            "accepted": res.accepted, "means": means, "wall_s": res.wall_s}

    # ------------------------------------------------------------------ single- vs multi-turn yield
    if "yield" in only:
        print(f"\n[yield] same seeds, same budget: {T} proposals per seed "
              f"(single-turn: 1 turn x {T} chains; multi-turn: {T} turns x 1 chain)")
        numbers["yield"] = {}
        kinds = {"procedural": families, "llm": args.llm_families.split(",")}
        for kind, fams in kinds.items():
            if kind not in args.yield_kinds.split(","):
                continue
            extra: list[str] = []
            row = {}
            for label, shape in (("single-turn", ["teacher.max_turns=1", f"teacher.chains_per_item={T}"]),
                                 ("multi-turn", [f"teacher.max_turns={T}", "teacher.chains_per_item=1"])):
                res = run_generate(root / f"yield-{kind}-{label}",
                                   [*common, f"teacher.kind={kind}", "teacher.in_band=harder", *shape, *extra],
                                   model, model if kind == "llm" else None, families=fams, seeds=args.seeds,
                                   level=args.start_level, verbose=args.verbose)
                row[label] = (res.accepted, res.proposals, res.wall_s)
            (a1, p1, w1), (a2, p2, w2) = row["single-turn"], row["multi-turn"]
            ratio = f"{a2 / a1:.2f}x" if a1 else ("inf" if a2 else "n/a (0 vs 0)")
            print(f"  {kind:<10} single-turn {a1:>3} kept / {p1:>3} proposals ({w1:.0f} s)   "
                  f"multi-turn {a2:>3} kept / {p2:>3} proposals ({w2:.0f} s)   multi/single {ratio}")
            numbers["yield"][kind] = {"single": row["single-turn"], "multi": row["multi-turn"]}

    local.close()
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2, default=str))
    print(f"\nrun directories in {root}")


if __name__ == "__main__":
    main()

"""Time jitted calls: compile apart from running, then the median of repeated calls.

``time_call(fn, *args)`` lowers and compiles ``jax.jit(fn)`` for these arguments (the compile
seconds, trace + XLA, nothing run), makes one warm-up call (its seconds estimate a call's cost),
then repeats the call as many times as fit in ``budget_s`` (within ``min_repeats`` ..
``max_repeats``) and reports the median wall time of those calls, each ended by
``jax.block_until_ready``. The median rather than the best: on a machine shared with other work a
burst of load moves the median less than it moves the mean, and the best of many calls reports a
speed the machine rarely gives. The process CPU time of each call is kept beside it (all threads:
CPU / wall tells how many cores the call got).

``time_calls({name: (fn, args)})`` does the same for several calls that are to be compared (the
libraries at one point of a sweep), round-robin: each round calls every one of them once, so a
stretch of load from other processes (on a shared 2-core machine XLA then gets one core instead
of two, and a call takes up to twice as long) falls on all of them alike rather than on one.

Every call gets the same arguments, so a train step is timed from the same state each time: the
cost of one step, not a training run. Nothing is donated.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def compile_timed(fn: Callable, args: tuple) -> tuple[Callable, float, float]:
    """(compiled, wall seconds, process CPU seconds) of lowering and compiling ``jax.jit(fn)``."""
    start, cpu_start = time.perf_counter(), time.process_time()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start, time.process_time() - cpu_start


def call_timed(compiled: Callable, args: tuple) -> tuple[Any, float, float]:
    """(output, wall seconds, process CPU seconds) of one call, ended by block_until_ready."""
    start, cpu_start = time.perf_counter(), time.process_time()
    output = jax.block_until_ready(compiled(*args))
    return output, time.perf_counter() - start, time.process_time() - cpu_start


def time_calls(
    calls: dict[str, tuple[Callable, tuple]],
    budget_s: float = 2.0,
    min_repeats: int = 3,
    max_repeats: int = 100,
) -> dict[str, dict[str, Any]]:
    """Compile each call, warm each up, then time them round-robin (see the module docstring).

    Every call gets the same number of rounds: as many as fit in ``budget_s`` per call, judged
    from the warm-up calls, within ``min_repeats`` .. ``max_repeats``. Returns, per name,
    {"compile_s", "compile_cpu_s", "first_call_s", "seconds" (median wall), "cpu_seconds"
    (median process CPU), "repeats", "all_seconds", "output" (the warm-up call's result)}.
    """
    results: dict[str, dict[str, Any]] = {}
    compiled = {}
    for name, (fn, args) in calls.items():
        compiled[name], compile_s, compile_cpu_s = compile_timed(fn, args)
        results[name] = {"compile_s": compile_s, "compile_cpu_s": compile_cpu_s}
    for name, (_, args) in calls.items():
        output, first_call_s, _ = call_timed(compiled[name], args)
        results[name].update(first_call_s=first_call_s, output=output)
    round_s = sum(result["first_call_s"] for result in results.values())
    repeats = int(budget_s * len(calls) / max(round_s, 1e-9))
    repeats = max(min_repeats, min(max_repeats, repeats))
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (_, args) in calls.items():
            _, wall_s, cpu_s = call_timed(compiled[name], args)
            wall[name].append(wall_s)
            cpu[name].append(cpu_s)
    for name, result in results.items():
        result.update(
            seconds=statistics.median(wall[name]),
            cpu_seconds=statistics.median(cpu[name]),
            repeats=repeats,
            all_seconds=wall[name],
        )
    return results


def time_call(
    fn: Callable,
    *args: Any,
    budget_s: float = 2.0,
    min_repeats: int = 3,
    max_repeats: int = 100,
) -> dict[str, Any]:
    """``time_calls`` of one call: compile, warm-up and median seconds of ``fn(*args)``."""
    calls = {"call": (fn, args)}
    return time_calls(calls, budget_s, min_repeats, max_repeats)["call"]

"""Run every benchmark script, record the machine and package versions, then render BENCHMARKS.md.

Each script runs in its own process with this interpreter, in the order of BENCHMARKS.md, with the
command BENCHMARKS.md documents for it (``JOBS``), and writes its JSON into the results folder.
Before the first script, ``environment.json`` records the machine (CPU model, cores, RAM, OS,
Python, JAX's devices), the package versions and the git commit; after every script it gains that
script's command, exit code and wall time. Then ``report.py`` rewrites the generated tables.
A script that fails stops the run with a nonzero exit code naming it (the report is not rendered).

    python benchmarks/run_all.py            # everything (about two hours on 2 CPU cores)
    python benchmarks/run_all.py --quick    # every script's smoke mode into runs/bench-quick/,
                                            # rendered into runs/bench-quick/BENCHMARKS.md
    python benchmarks/run_all.py --environment-only --note "..."   # only environment.json

``--quick`` is the smoke test of the whole pipeline: the committed results and BENCHMARKS.md are
left alone. ``benchmarks/scaling.py`` runs last when it exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import report  # benchmarks/ is on sys.path when this runs as a script

ROOT = report.ROOT
BENCHMARKS = ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results"
QUICK_ROOT = ROOT / "runs" / "bench-quick"
ABLATION_TABLE = (
    "base softplus density_affine uniform_output kernel_only bias_only uniform_hidden "
    "uniform_hidden+softplus uniform_hidden+density_affine flowjax_like"
).split()


class Job(NamedTuple):
    script: str  # file in benchmarks/
    args: tuple[str, ...]  # the documented command's arguments, without --out
    out: str  # the JSON it writes, a file name in the results folder
    quick_args: tuple[str, ...]  # the smoke run's arguments, without --out

    def documented(self) -> str:
        """The command as BENCHMARKS.md shows it (--out only where it is not the default)."""
        words = [".venv/bin/python", f"benchmarks/{self.script}", *self.args]
        if self.out != Path(self.script).stem + ".json":
            words += ["--out", f"benchmarks/results/{self.out}"]
        return " ".join(words)

    def argv(self, results: Path, quick: bool) -> list[str]:
        args = self.quick_args if quick else self.args
        return [
            sys.executable,
            str(BENCHMARKS / self.script),
            *args,
            "--out",
            str(results / self.out),
        ]


MCMC_ROWS = ("--rows", "banana", "gauss_rwmh", "gauss_hmc", "ising")
CHEES_SEEDS = ("--seeds", "1", "2", "--samplers", "ours_chees", "bj_chees")
ABLATION_TAIL = ("--datasets", "pinwheel", "checkerboard", "--seed-offset", "0")

JOBS = (
    Job("flows_2d.py", (), "flows_2d.json", ("--quick",)),
    Job(
        "flows_ablation.py",
        ("--variants", *ABLATION_TABLE),
        "flows_ablation.json",
        ("--quick", "--variants", "base", "uniform_hidden"),
    ),
    Job(
        "flows_ablation.py",
        (
            *ABLATION_TAIL,
            "--seeds",
            "10",
            "--variants",
            "uniform_hidden",
            "uniform_hidden+density_affine",
        ),
        "flows_ablation_tail.json",
        ("--quick", *ABLATION_TAIL, "--variants", "uniform_hidden"),
    ),
    Job(
        "glow.py",
        ("--variants", "scan", "unrolled", "floor"),
        "glow.json",
        ("--quick", "--variants", "scan", "unrolled", "floor", "--skip-conv-loop"),
    ),
    Job(
        "glow.py",
        ("--variants", "default", "unrolled", "floor"),
        "glow_default.json",
        ("--quick", "--variants", "default", "unrolled", "floor", "--skip-conv-loop"),
    ),
    Job("autoregressive.py", (), "autoregressive.json", ("--quick",)),
    Job("generation.py", (), "generation.json", ("--quick",)),
    Job(
        "generation.py",
        ("--rows", "gated"),
        "generation_gated.json",
        ("--quick", "--rows", "gated"),
    ),
    Job("adaptation.py", ("--seeds", "0"), "adaptation.json", ("--quick", "--seeds", "0")),
    Job("adaptation.py", CHEES_SEEDS, "adaptation_chees_seeds.json", ("--quick", *CHEES_SEEDS)),
    Job("mcmc.py", MCMC_ROWS, "mcmc.json", ("--quick", *MCMC_ROWS)),
    Job(
        "mcmc.py",
        ("--rows", "diagnostics"),
        "mcmc_diagnostics.json",
        ("--quick", "--rows", "diagnostics"),
    ),
)
# Written by another script's author; run when it is there (figures: docs/benchmarks/, or with
# --quick the folder of its --out).
SCALING = Job("scaling.py", (), "scaling.json", ("--quick",))


def jobs() -> list[Job]:
    return [*JOBS, SCALING] if (BENCHMARKS / SCALING.script).exists() else list(JOBS)


def jax_devices() -> list[str] | None:
    """JAX's devices, asked in a child process so that this one never holds the accelerator."""
    probe = "import jax; print('\\n'.join(f'{d.platform}: {d.device_kind}' for d in jax.devices()))"
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.split("\n")[:-1] or None


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")


def record_environment(quick: bool, note: str | None = None) -> dict[str, Any]:
    environment = {
        **report.current_environment(),
        "jax_devices": jax_devices(),
        "quick": quick,
        "started_utc": now_utc(),
        "load_average_at_start": list(os.getloadavg()),
        "scripts": [],
    }
    if note:
        environment["note"] = note
    return environment


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run into runs/bench-quick/")
    parser.add_argument(
        "--environment-only",
        action="store_true",
        help="write environment.json into the results folder and run nothing",
    )
    parser.add_argument("--note", default=None, help="a sentence stored in environment.json")
    args = parser.parse_args()
    results = QUICK_ROOT / "results" if args.quick else RESULTS
    markdown = QUICK_ROOT / "BENCHMARKS.md" if args.quick else report.DEFAULT_MARKDOWN
    environment_path = results / report.ENVIRONMENT_FILE

    environment = record_environment(args.quick, args.note)
    if args.environment_only:
        environment["environment_only"] = True
        write_json(environment_path, environment)
        print(f"wrote {environment_path}")
        return 0
    if args.quick and QUICK_ROOT.exists():
        shutil.rmtree(QUICK_ROOT)  # no stale JSON from an earlier smoke run may fill a table
    write_json(environment_path, environment)

    selected = jobs()
    started = time.perf_counter()
    for index, job in enumerate(selected, 1):
        argv = job.argv(results, args.quick)
        shown = " ".join(Path(a).name if a == sys.executable else a for a in argv)
        print(f"\n=== [{index}/{len(selected)}] {shown}", flush=True)
        job_started = time.perf_counter()
        returncode = subprocess.run(argv, cwd=ROOT).returncode
        wall_s = time.perf_counter() - job_started
        command = (
            job.documented()
            if not args.quick
            else " ".join([".venv/bin/python", f"benchmarks/{job.script}", *job.quick_args])
        )
        environment["scripts"].append(
            {"command": command, "out": job.out, "returncode": returncode, "wall_s": wall_s}
        )
        environment["finished_utc"] = now_utc()
        write_json(environment_path, environment)
        print(f"=== {job.script} -> {job.out}: {wall_s:.0f} s, exit {returncode}", flush=True)
        if returncode != 0:
            print(
                f"\nFAILED: benchmarks/{job.script} exited with {returncode} ({shown}); "
                f"{markdown.name} was not rendered",
                file=sys.stderr,
            )
            return returncode if returncode > 0 else 1
    environment["load_average_at_end"] = list(os.getloadavg())
    write_json(environment_path, environment)

    print("\n| script | JSON | wall (s) |\n|---|---|---:|")
    for entry in environment["scripts"]:
        print(f"| {entry['command']} | {entry['out']} | {entry['wall_s']:.0f} |")
    print(f"all scripts: {(time.perf_counter() - started) / 60:.1f} min", flush=True)

    report_argv = ["--results", str(results), "--out", str(markdown)]
    if args.quick:
        report_argv += ["--template", str(report.DEFAULT_MARKDOWN)]
    code = report.main(report_argv)
    if code != 0:
        print("FAILED: benchmarks/report.py", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

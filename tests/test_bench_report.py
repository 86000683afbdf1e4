"""benchmarks/report.py: generated tables come from their JSON, deterministically, and the committed
BENCHMARKS.md is exactly what its committed results render to. No benchmark runs here."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # run_all imports report by this name
    spec.loader.exec_module(module)
    return module


report = _load("report")
run_all = _load("run_all")

COMMITTED = report.DEFAULT_MARKDOWN.read_text()


def _region(name, inner=""):
    return f"<!-- generated: {name} -->\n{inner}\n<!-- end generated -->"


def _mcmc_row(library, seconds, cpu_seconds, floor_seconds, ours_seconds, acceptance=0.5):
    chains, steps = 1000, 100
    return {
        "row": "banana",
        "title": "RWMH, 2-D banana",
        "library": library,
        "num_chains": chains,
        "num_steps": steps,
        "seconds": seconds,
        "chain_steps_per_s": chains * steps / seconds,
        "ours_speedup": seconds / ours_seconds,
        "cost_over_floor": seconds / floor_seconds,
        "cpu_seconds": cpu_seconds,
        "cpu_cost_over_floor": cpu_seconds / 0.004,
        "acceptance": acceptance,
    }


def _fixture_results(folder: Path) -> None:
    """A small mcmc.json (TFP faster than ours, so a target fails) and an environment.json."""
    rows = [
        _mcmc_row("nflows_jax", 0.005, 0.005, 0.004, 0.005, 0.533),
        _mcmc_row("tfp", 0.004, 0.0046, 0.004, 0.005, 0.534),
        _mcmc_row("floor", 0.004, 0.004, 0.004, 0.005),
    ]
    mcmc = {"meta": {"repeats": 3, "load_average_at_start": [1.25, 1.0, 1.0]}, "rows": rows}
    (folder / "mcmc.json").write_text(json.dumps(mcmc))
    environment = {
        "cpu_model": "Test CPU",
        "machine": "x86_64",
        "cpu_count": 2,
        "cpus_usable": 2,
        "memory_gib": 24.0,
        "os": "Test OS",
        "platform": "Linux-test",
        "python": "3.11.7",
        "packages": {"jax": "0.10.2", "numpy": "2.4.6"},
        "quick": False,
        "started_utc": "2026-12-01 10:00",
        "scripts": [{"command": "python benchmarks/mcmc.py", "out": "mcmc.json", "returncode": 0,
                     "wall_s": 90.0}],
    }  # fmt: skip
    (folder / "environment.json").write_text(json.dumps(environment))


TEMPLATE = "\n\n".join(
    [
        "# Title\n\nHand-written prose, kept as it is.",
        _region("environment"),
        _region("mcmc/speed", "| stale | table |"),
        "More prose.",
        _region("mcmc/targets"),
        _region("glow/scan", "| kept | because glow.json is missing |"),
        "The end.\n",
    ]
)


def test_rendering_is_deterministic_and_idempotent(tmp_path):
    _fixture_results(tmp_path)
    results = report.load_results(tmp_path)
    once, warnings = report.render_document(TEMPLATE, results, tmp_path)
    twice, _ = report.render_document(once, report.load_results(tmp_path), tmp_path)
    assert once == twice
    assert once != TEMPLATE
    assert warnings == ["glow/scan: left as it was, glow.json missing"]
    # Outside the regions nothing changes, and the region without its JSON keeps its text.
    for kept in ("Hand-written prose, kept as it is.", "More prose.", "The end.\n"):
        assert kept in once
    assert _region("glow/scan", "| kept | because glow.json is missing |") in once
    assert "| stale | table |" not in once


def test_rendered_numbers_come_from_the_json(tmp_path):
    _fixture_results(tmp_path)
    rendered, _ = report.render_document(TEMPLATE, report.load_results(tmp_path), tmp_path)
    # 1000 chains x 100 steps in 0.005 s = 20 M chain-steps/s; TFP's 0.004 s = 25 M, 0.80x ours.
    assert "| RWMH, 2-D banana, 1,000 × 100 | nflows_jax | 20 M | 0.533 | — | 1.25 | 1.25 |" in (
        rendered
    )
    assert "|  | tfp | 25 M | 0.534 | 0.80 | 1.00 | 1.15 |" in rendered
    # The verdicts follow from the numbers: slower than TFP, 1.25x the floor (> 1.2) on wall
    # and on CPU time.
    assert "| ≥ fastest peer on every row | banana 0.80× tfp | banana no |" in rendered
    assert "banana no (CPU: no)" in rendered
    assert "Recorded by `make bench`, started 2026-12-01 10:00 (UTC)." in rendered
    assert "Machine: Test CPU (x86_64), 2 cores (2 usable), 24.0 GiB RAM" in rendered
    assert "| jax | 0.10.2 |" in rendered
    assert "| `python benchmarks/mcmc.py` | 90 | 0 |" in rendered


def test_environment_falls_back_to_the_current_one_and_says_so(tmp_path):
    text = report.render_region("environment", {}, tmp_path)
    assert "environment.json` is missing" in text
    assert "| package | version |" in text


def test_result_files_with_other_versions_are_named(tmp_path):
    _fixture_results(tmp_path)
    results = report.load_results(tmp_path)
    results["old.json"] = {"meta": {"jax": "0.4.1"}}
    text = report.render_region("environment", results, tmp_path)
    assert "`old.json` ran with jax 0.4.1" in text


def test_scaling_figures_link_relative_to_the_markdown_written(tmp_path):
    results = {"scaling.json": {"figures": {"chains": "runs/q/results/scaling_chains.png"}}}
    text = report.render_region("scaling/figures", results, report.ROOT / "runs" / "q")
    assert text == "![chains](results/scaling_chains.png)"


def test_generic_table_takes_its_columns_from_the_keys():
    records = [{"sweep": "chains", "slope": 0.98}, {"sweep": "dimension", "extra": None}]
    assert report.generic_table(records) == (
        "| sweep | slope | extra |\n|---|---:|---|\n| chains | 0.98 | — |\n| dimension | — | — |"
    )


@pytest.mark.parametrize(
    "text",
    [
        _region("mcmc/speed") + "\n" + _region("mcmc/speed"),  # a name twice
        "<!-- generated: mcmc/speed -->\n<!-- generated: glow/scan -->",  # nested / unclosed
        "<!-- generated: mcmc/speed -->\ntext",  # never closed
        "text\n<!-- end generated -->",  # an end without a begin
        _region("no/such_renderer"),
        "<!-- generated:mcmc/speed -->\n<!-- end generated -->",  # malformed begin
    ],
)
def test_malformed_markers_are_refused(text):
    with pytest.raises(report.MarkerError):
        report.find_regions(text.split("\n"), report.KNOWN_REGIONS)


def test_committed_markers_are_well_formed_and_cover_every_renderer():
    regions = report.find_regions(COMMITTED.split("\n"), report.KNOWN_REGIONS)
    names = [r.name for r in regions]
    assert sorted(names) == sorted(report.KNOWN_REGIONS)


def test_committed_benchmarks_md_is_what_the_committed_results_render_to():
    results = report.load_results(report.DEFAULT_RESULTS)
    rendered, _ = report.render_document(COMMITTED, results, report.DEFAULT_MARKDOWN.parent)
    assert rendered == COMMITTED, (
        "BENCHMARKS.md differs from what benchmarks/results/*.json render to: run "
        "`make bench-report` (and never edit a generated table by hand)"
    )


def _documented_commands(text):
    """The `.venv/bin/python benchmarks/...` lines of the document, without their comments."""
    commands = set()
    for line in text.split("\n"):
        if line.startswith(".venv/bin/python benchmarks/"):
            commands.add(" ".join(line.split("#", 1)[0].split()))
    return commands


def test_run_all_runs_the_commands_benchmarks_md_documents():
    documented = _documented_commands(COMMITTED)
    for job in (*run_all.JOBS, run_all.SCALING):
        assert job.documented() in documented, f"BENCHMARKS.md does not show {job.documented()}"
    # Every generated table's JSON is written by one of the jobs.
    written = {job.out for job in (*run_all.JOBS, run_all.SCALING)}
    for renderer in report.RENDERERS.values():
        assert set(renderer.sources) <= written


def test_run_all_stops_with_the_failing_scripts_exit_code_and_names_it(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "fails.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.setattr(run_all, "BENCHMARKS", tmp_path)
    monkeypatch.setattr(run_all, "QUICK_ROOT", tmp_path / "quick")
    monkeypatch.setattr(run_all, "JOBS", (run_all.Job("fails.py", (), "fails.json", ()),))
    monkeypatch.setattr(run_all, "SCALING", run_all.SCALING._replace(script="absent.py"))
    monkeypatch.setattr(run_all, "jax_devices", lambda: None)  # no JAX import in this test
    monkeypatch.setattr(sys, "argv", ["run_all.py", "--quick"])
    assert run_all.main() == 3
    assert "FAILED: benchmarks/fails.py exited with 3" in capsys.readouterr().err
    environment = json.loads((tmp_path / "quick" / "results" / "environment.json").read_text())
    assert [s["returncode"] for s in environment["scripts"]] == [3]
    assert not (tmp_path / "quick" / "BENCHMARKS.md").exists()

"""`glimpse bench`: every benchmark, measured side by side in one run, printed as ratios.

Each suite returns rows ``{"name", "ours_s", "baseline_s", "ratio", "note"}`` where ``ratio = ours / baseline``
(below 1 means Glimpse is faster, unless the note says otherwise); a row whose figure is not a time (a memory size,
a percentage) gives it as text in ``"ours"`` instead. ``--out`` also writes them as Markdown with the
machine they ran on.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SUITES", "configure_bench", "run_bench", "format_rows", "machine_description"]

# suite name -> "module:function"; each function takes quick: bool and returns a list of row dicts.
SUITES: dict[str, str] = {
    "explain": "glimpse.bench_explain:run_explain_benchmarks",
    "occlusion": "glimpse.bench_occlusion:run_occlusion_benchmarks",
    "serving": "serving.bench:run_serving_benchmarks",
    "api": "glimpse.bench_api:run_api_benchmarks",
    "pipeline": "training.train:run_pipeline_benchmarks",
}


def configure_bench(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", action="append", choices=sorted(SUITES), help="Run only these suites (repeatable).")
    parser.add_argument("--quick", action="store_true", help="Fewer repetitions (for a smoke run).")
    parser.add_argument("--out", type=Path, default=None, help="Also write the results as Markdown to this file.")


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages * size / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}){mem}, no GPU, Python {platform.python_version()}, {platform.system()}"


def _load(spec: str) -> Callable[..., list[dict[str, Any]]]:
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)


def _fmt_s(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{value * 1000:.1f} ms" if value < 10 else f"{value:.1f} s"
    return str(value) if value is not None else ""


def format_rows(suite: str, rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"### {suite}", "", "| benchmark | Glimpse | baseline | ratio | note |", "|---|---|---|---|---|"]
    for r in rows:
        ratio = r.get("ratio")
        ratio_s = f"{ratio:.3f}x" if isinstance(ratio, (int, float)) else str(ratio or "")
        # a row may give its figure as text ("ours": "212 MB") where it is not a time
        ours, base = r.get("ours") or _fmt_s(r.get("ours_s")), _fmt_s(r.get("baseline_s"))
        lines.append(f"| {r['name']} | {ours} | {base} | {ratio_s} | {r.get('note', '')} |")
    return lines + [""]


def run_bench(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    suites = args.suite or list(SUITES)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    out: list[str] = [f"Run `{' '.join(['glimpse', 'bench', *sys.argv[2:]])}` at {started}", "",
                      f"Machine: {machine_description()}", ""]
    failed = 0
    for name in suites:
        t0 = time.perf_counter()
        try:
            rows = _load(SUITES[name])(quick=args.quick)
        except Exception as e:  # a broken suite is reported, the others still run
            failed += 1
            out += [f"### {name}", "", f"FAILED: {type(e).__name__}: {e}", ""]
            print(f"[{name}] FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            continue
        lines = format_rows(name, rows)
        lines.append(f"({name} took {time.perf_counter() - t0:.0f} s)")
        lines.append("")
        print("\n".join(lines), flush=True)
        out += lines
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("# Benchmarks\n\n" + "\n".join(out) + "\n", encoding="utf-8")
        print(f"written to {args.out}")
    return 1 if failed else 0

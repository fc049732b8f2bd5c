"""The report of ``bertkit.benchmark.run_benchmark`` as a readable table: one row per implementation
and configuration, the configuration and the ratios on the first."""

from __future__ import annotations

from typing import Any

from bertkit.benchmark import PEAK_SHAPE


def format_report(report: dict[str, Any]) -> str:
    """The report as a readable table: one row per implementation and configuration."""
    c, peaks = report["config"], report["matmul_peak_flops_per_s"]
    scale, unit = (1e12, "TFLOP/s") if max(peaks.values()) >= 1e12 else (1e9, "GFLOP/s")
    lines = [f"model {report['model']}: L={c['layers']} H={c['hidden']} A={c['heads']} I={c['intermediate']} "
             f"V={c['vocab']}; {report['device']} ({report['device_name']}), {report['threads']} threads, "
             f"{report.get('allocator', 'system')} malloc; "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
             "matmul peak ({}x{} @ {}x{}): ".format(PEAK_SHAPE[0], PEAK_SHAPE[1], PEAK_SHAPE[1], PEAK_SHAPE[2])
             + ", ".join(f"{k} {v / scale:,.3g} {unit}" for k, v in peaks.items()), ""]
    header = ("mode", "lengths", "precision", "batch", "impl", "tokens/s", "ms/batch", unit, "MFU",
              "peak MB", "step MB", "speed-up", "mem ratio")
    rows = [header] + [row for result in report["results"] for row in _rows(result, scale)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:  # text columns left-aligned, numbers right-aligned
        cells = (cell.rjust(w) if i >= 5 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        lines.append("  ".join(cells).rstrip())
    differences = [r["max_relative_difference"] for r in report["results"] if r["max_relative_difference"] is not None]
    if differences:
        lines += ["", "outputs agreed on real tokens before timing "
                  f"(largest relative difference {max(differences):.1e})",
                  "speed-up: transformers' time / bertkit's on the same batch (median); "
                  "mem ratio: transformers' step memory / bertkit's"]
    return "\n".join(lines)


def _rows(result: dict[str, Any], scale: float) -> list[tuple[str, ...]]:
    """Two rows per configuration (one with bertkit alone); the first carries the configuration and ratios."""
    impls = result["implementations"]
    spec = (result["mode"], result["lengths"], result["precision"], str(result["batch_size"]))
    speedup = "" if result["speedup"] is None else f"{result['speedup']:.2f}x"
    ratio = _ratio(impls.get("transformers", {}).get("step_memory_mb"), impls["bertkit"].get("step_memory_mb"))
    rows = []
    for i, (name, r) in enumerate(impls.items()):
        lead, tail = (spec, (speedup, ratio)) if i == 0 else (("",) * 4, ("", ""))
        label = f"{name} (compiled)" if name == "bertkit" and result.get("compile") else name
        rows.append((*lead, label, f"{r['tokens_per_s']:,.0f}", f"{r['ms_per_batch']:,.1f}",
                     f"{r['flops_per_s'] / scale:,.3g}", f"{100 * r['mfu']:.1f}%", _mb(r.get("peak_memory_mb")),
                     _mb(r.get("step_memory_mb")), *tail))
    return rows


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ratio(theirs: float | None, ours: float | None) -> str:
    return f"{theirs / ours:.2f}x" if theirs and ours else ""

"""Run the benchmark sections and write BENCHMARKS.md and benchmarks.json."""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import json
import os
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hbci.bench import SECTIONS
from hbci.bench.machine import describe

__all__ = ["Context", "run", "write", "summary", "MARKDOWN", "JSON"]

MARKDOWN, JSON = "BENCHMARKS.md", "benchmarks.json"


@dataclass
class Context:
    work: Path                      # built models and bundles, reused by later runs
    quick: bool = False
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True)
    machine: dict = field(default_factory=dict)


def run(ctx: Context, sections: tuple[str, ...] = SECTIONS, command: str | None = None,
        progress: Callable[[dict], None] | None = None) -> dict:
    """Every section's figures (a section that cannot run here says why; one that fails keeps its error).
    `progress` gets the figures so far after each section (the CLI writes the files each time)."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    ctx.work.mkdir(parents=True, exist_ok=True)
    ctx.machine = describe()
    started = time.perf_counter()
    result = {"command": command or shlex.join(["hbci-bench"] + sys.argv[1:]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "quick": ctx.quick, "machine": ctx.machine, "sections": {}}
    for name in sections:
        module = importlib.import_module(f"hbci.bench.{name}")
        if module.NEEDS_TORCH and importlib.util.find_spec("torch") is None:
            result["sections"][name] = {"skipped": "needs the train extra: pip install 'hbci[train]'"}
            continue
        ctx.log(f"[bench] {name} ...")
        t0 = time.perf_counter()
        try:
            figures = module.run(ctx)
        except Exception as exc:  # a failed section is reported in the files, and the command exits non-zero
            ctx.log(traceback.format_exc())
            figures = {"error": f"{type(exc).__name__}: {exc}"}
        figures["seconds"] = round(time.perf_counter() - t0, 1)
        result["sections"][name] = figures
        ctx.log(f"[bench] {name} done in {figures['seconds']} s")
        result["load_average_after"] = list(os.getloadavg())
        result["seconds"] = round(time.perf_counter() - started, 1)
        result["summary"] = summary(result)
        if progress is not None:
            progress(result)
    return result


def _min_ratio(values: list[tuple[str, float]]) -> dict | None:
    if not values:
        return None
    where, value = min(values, key=lambda x: x[1])
    return {"min": value, "where": where, "rows": len(values)}


def summary(result: dict) -> dict:
    """The figures the project's targets are stated in, pulled from the sections."""
    sections = result["sections"]
    out: dict = {}
    encoders = sections.get("encoders", {}).get("sizes", {})
    for size, s in encoders.items():
        for row in s["graphs"]["video_encoder"]["rows"]:
            if row.get("row") == "onnxruntime int8":
                out[f"{size}_int8_video"] = {"x_torch": row["x_torch"], "x_floor": row["x_floor"],
                                             "clips_per_s": row["per_s"]}
    ratios = []  # now / before, > 1 = faster with spinning off
    for size, s in encoders.items():
        for graph, g in s["graphs"].items():
            ratios += [(f"encoders {size} {graph} {r['row']}", r["before_over_now"]) for r in g["rows"]
                       if "before_over_now" in r]
    for size, s in sections.get("scorer", {}).get("sizes", {}).items():
        ratios.append((f"scorer {size}", s["before_over_now"]))
    live = sections.get("live", {}).get("settings")
    if live:
        now, before = live["now"], live["before"]
        ratios += [(f"live {k}", now[k] / before[k]) for k in ("encoder_batch1", "encoder_batch8")]
        for name in ("offline", "live"):
            if name in now:
                ratios.append((f"live {name} windows/s", now[name]["windows_per_s"] / before[name]["windows_per_s"]))
                ratios.append((f"live {name} encode ms per window",
                               before[name]["encode_ms_per_window"] / now[name]["encode_ms_per_window"]))
                for key in ("window_latency_s", "event_latency_s"):
                    for q in ("p50", "p95", "max"):
                        if now[name].get(key) and before[name].get(key):
                            ratios.append((f"live {name} {key[:-2].replace('_', ' ')} {q}",
                                           before[name][key][q] / now[name][key][q]))
    for label, b in sections.get("threads", {}).get("bundles", {}).items():
        ms = b["ms_per_window"]
        ratios.append((f"threads {label}", ms["spin-on"] / ms["spin-off"]))
    out["spinning_off_over_on"] = _min_ratio(ratios)
    footprint = sections.get("footprint", {})
    if "imports" in footprint:
        out["import_hbci_runtime_s"] = footprint["imports"]["import_hbci_runtime_s"]
        out["import_runtime_api_s"] = (footprint["imports"]["import_hbci_runtime_s"]
                                       + footprint["imports"]["import_retriever_and_monitor_s"])
        out["peak_rss_mb"] = {k: b.get("peak_rss_mb") for k, b in footprint["bundles"].items()}
    return out


def _markdown(result: dict) -> str:
    m = result["machine"]
    cpu = m["cpu"]
    isa = ", ".join(f for f, present in cpu["isa"].items() if present) or "none of those checked"
    versions = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    lines = [
        "# Benchmarks", "",
        f"Written by `{result['command']}` on {result['date']} in {result['seconds']:.0f} s"
        f"{' (--quick: tiny settings, figures are not meaningful)' if result['quick'] else ''}. "
        "Rerun it to get this machine's figures; ratios are measured side by side in one run, absolute figures "
        "depend on the machine and its load.", "",
        "## Machine", "",
        f"- CPU: {cpu['model']} ({cpu['vendor']}), {cpu['cores']} usable cores ({cpu['logical_cpus']} logical), "
        f"{cpu['ghz']:.2f} GHz ({cpu['clock_from']}); memory {m['memory_gib']} GiB",
        f"- ISA flags: {isa}; INT8 path {cpu['int8_path']}",
        f"- GPU: {', '.join(m['gpus']) or 'none'}; ONNX Runtime providers: {', '.join(m['onnxruntime_providers'])}",
        f"- load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in m['load_average'])}; after: "
        f"{', '.join(f'{x:.2f}' for x in result['load_average_after'])}",
        f"- Python {m['python']}, {m['platform']}; {versions}", "",
        "Compute floor: FLOPs are counted from the FP32 graph (2 x the multiply-adds of every MatMul/Gemm/Conv, "
        "from their tensor shapes in one run; LayerNorm, Softmax, GELU and adds left out, so the floor is a lower "
        "bound) and divided by the peak of the usable cores: cores x clock x ops per cycle per core, "
        f"{cpu['ops_per_cycle']['fp32']} FP32 / {cpu['ops_per_cycle']['fp16']} FP16 / "
        f"{cpu['ops_per_cycle']['int8']} INT8 here (from the ISA flags; see `hbci/bench/machine.py`), i.e. "
        f"{m['peaks']['fp32'] / 1e12:.2f} / {m['peaks']['fp16'] / 1e12:.2f} / {m['peaks']['int8'] / 1e12:.2f} "
        "TOPS. measured / floor is how far a back end is from the hardware.", "",
    ]
    s = result["summary"]
    lines += ["## Summary", ""]
    for key, value in s.items():
        if key.endswith("_int8_video"):
            lines.append(f"- INT8 video encoder, {key.split('_')[0]}: {value['clips_per_s']:.2f} clips/s, "
                         f"x{value['x_torch']:.2f} torch eager FP32, {value['x_floor']:.2f} x the INT8 compute floor")
    if s.get("spinning_off_over_on"):
        r = s["spinning_off_over_on"]
        lines.append(f"- spinning off (now) against on (before), worst of {r['rows']} rows: x{r['min']:.2f} "
                     f"({r['where']}; > 1 is faster now)")
    if "import_hbci_runtime_s" in s:
        lines.append(f"- `import hbci.runtime` {s['import_hbci_runtime_s'] * 1000:.0f} ms; with the retriever and "
                     f"monitor modules {s['import_runtime_api_s'] * 1000:.0f} ms")
        for label, rss in s["peak_rss_mb"].items():
            if rss is not None:
                lines.append(f"- runtime peak RSS with the {label} bundle: {rss:.0f} MB")
    lines.append("")
    for name, figures in result["sections"].items():
        module = importlib.import_module(f"hbci.bench.{name}")
        lines += [f"## {module.TITLE}", ""]
        doc = (module.__doc__ or "").strip()
        lines += [" ".join(doc.split()), ""]
        if "skipped" in figures:
            lines += [f"Skipped: {figures['skipped']}", ""]
        elif "error" in figures:
            lines += [f"FAILED: {figures['error']}", ""]
        else:
            lines += module.markdown(figures, result["machine"])
    return "\n".join(lines).rstrip() + "\n"


def write(result: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / MARKDOWN, out / JSON
    js.write_text(json.dumps(result, indent=1) + "\n")
    md.write_text(_markdown(result))
    return md, js

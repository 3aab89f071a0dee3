"""Runtime footprint: `import hbci.runtime` time and the runtime's peak RSS with the demo bundle and with a
ViT-B/32-sized INT8 bundle, each in fresh processes (no torch, except to build the ViT-B/32 bundle once).

Peak RSS is the whole process's (interpreter, numpy, OpenCV, ONNX Runtime, the three sessions), after loading the
bundle with its self-check, encoding the queries and scoring a few windows.
"""

from __future__ import annotations

import importlib.util
import statistics

from hbci.bench.probe import measure

__all__ = ["TITLE", "NEEDS_TORCH", "run", "markdown", "large_bundle"]

TITLE = "Runtime footprint"
NEEDS_TORCH = False


def large_bundle(ctx) -> tuple[str | None, str, str]:
    """(bundle folder or None, its label, why it is missing): the ViT-B/32-sized INT8 bundle (the small one in
    --quick), built with torch when the work folder has none."""
    name = "small" if ctx.quick else "vitb32"
    label = "small INT8 (--quick)" if ctx.quick else "ViT-B/32-sized INT8"
    folder = ctx.work / name / "bundle"
    if (folder / "manifest.json").is_file() or importlib.util.find_spec("torch") is not None:
        from hbci.bench import models

        try:
            return str(models.build(ctx.work, name, ctx.quick, ctx.log).bundle), label, ""
        except ImportError as exc:
            return None, label, f"building it needs the train extra ({exc})"
    return None, label, "not built: the train extra (torch) builds it once into the work folder"


def run(ctx) -> dict:
    from hbci.runtime.demo import BUNDLE_DIR

    repeats = 2 if ctx.quick else 5
    imports = [measure({"task": "import"}) for _ in range(repeats)]
    result = {"imports": {k: statistics.median(i[k] for i in imports)
                          for k in ("import_hbci_runtime_s", "import_retriever_and_monitor_s", "rss_mb")},
              "heavy_modules_loaded": sorted({m for i in imports for m in i["heavy_modules_loaded"]}),
              "repeats": repeats, "bundles": {}}
    bundles = [("demo", str(BUNDLE_DIR), "fp16", "")]
    path, label, why = large_bundle(ctx)
    bundles.append((label, path, "int8", why))
    for label, path, precision, why in bundles:
        if path is None:
            result["bundles"][label] = {"skipped": why}
            continue
        runs = [measure({"task": "retriever", "bundle": path, "precision": precision, "windows": 3})
                for _ in range(2 if ctx.quick else 3)]
        result["bundles"][label] = {"precision": precision, "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                                    "load_s": statistics.median(r["load_s"] for r in runs),
                                    "bundle_id": runs[0]["bundle_id"]}
    return result


def markdown(result: dict, machine: dict) -> list[str]:
    i = result["imports"]
    lines = [f"`import hbci.runtime`: {i['import_hbci_runtime_s'] * 1000:.0f} ms; then `import hbci.runtime.retriever, "
             f"hbci.runtime.monitor` (numpy, OpenCV, tokenizers): {i['import_retriever_and_monitor_s'] * 1000:.0f} ms "
             f"more; RSS after both {i['rss_mb']:.0f} MB (median of {result['repeats']} fresh processes; heavy "
             f"modules loaded: {', '.join(result['heavy_modules_loaded']) or 'none'}).", "",
             "| bundle | precision | peak RSS MB (whole process) | load + self-check s |", "|---|---|---:|---:|"]
    for label, b in result["bundles"].items():
        if "skipped" in b:
            lines.append(f"| {label} | | skipped: {b['skipped']} | |")
        else:
            lines.append(f"| {label} ({b['bundle_id']}) | {b['precision']} | {b['peak_rss_mb']:.0f} | "
                         f"{b['load_s']:.2f} |")
    lines.append("")
    return lines

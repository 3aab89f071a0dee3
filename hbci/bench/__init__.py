"""`hbci-bench`: one command that measures the encoders, the scorer, live monitoring and the runtime's footprint
and writes BENCHMARKS.md and benchmarks.json, with the machine described. One module per section."""

__all__ = ["SECTIONS"]

# Run in this order; each is a module of this package with TITLE, NEEDS_TORCH, run(ctx) and markdown(result,
# machine). A new section (e.g. archive search latency) is one new module and one name here.
SECTIONS = ("encoders", "scorer", "live", "footprint", "threads")

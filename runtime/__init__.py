"""The lean hbci runtime: bundles, back ends, tokenizer, video sources and live monitoring. No torch."""

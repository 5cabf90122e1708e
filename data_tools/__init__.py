"""Developer tools: weight conversion and reference-fixture generation (not installed)."""

"""Datasets: the source registry and `load_dataset(spec)` (`sources`), published benchmarks with their exact file
layouts (`catalog`, one `KnownSet` row each), and utility benchmarks' row converters and answer scoring (`utility`).
The `Record` type and the JSONL/CSV readers are in `core.records`.
"""

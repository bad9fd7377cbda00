"""Reward signals: toxicity (Detoxify, or a named offline fallback) and visual consistency (open_clip)."""

"""One module per tab; each has `build(ctx)` (components, registered by name) and `wire(ctx)` (events)."""

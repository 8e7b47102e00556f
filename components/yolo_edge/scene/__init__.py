"""Per-camera scene understanding: filters, tracking, zones, lines, events."""

"""HTTP layer: parse, call one service function, serialise."""

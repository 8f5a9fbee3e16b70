"""Client features, one module each: what the client does on top of the stream."""

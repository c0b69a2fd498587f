"""Pure protocol layer: message values, the msgpack codec and the auth primitives. No I/O."""

"""Arrays in, arrays out: the numerics of streamcrystal, with no streams, documents or networks."""

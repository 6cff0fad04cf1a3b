"""Arrays in, arrays out: the numerics of streamcrystal, with no streams, documents or networks.

``frames`` (average, subtract, clip), ``peaks`` (trackpy's locate, exactly, and fast:
``fastlocate/``), ``tracks`` (trackpy's link), ``maps`` (crystal maps on the scan).
"""

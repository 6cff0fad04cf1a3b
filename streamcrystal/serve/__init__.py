"""Serving a pipeline over 0MQ: ``wire`` (msgpack, never pickle by default), ``server`` (the
dispatcher that survives bad messages, the server), ``transport`` (proxy, publish)."""

"""The streamz graph: ``steps`` (what each node does, the failure policy), ``segments`` (named
nodes), ``pipeline`` (:func:`peak_tracking`), ``dask`` (the same nodes on a cluster),
``cluster`` (Dask clients), ``callbacks`` (the seed's names), ``results``, ``files``
(pipeline files), ``drawing`` (the graph drawn)."""

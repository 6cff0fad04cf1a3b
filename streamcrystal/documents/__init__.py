"""Event-model documents: routed in, external data filled, HDF5 read and written, analysis runs out.

``routing`` attributes raw documents to runs and streams; ``external`` fills frames;
``hdf5`` reads and appends HDF5 datasets with StreamResource/StreamDatum; ``analysis_run``
composes the analysis run of a raw run; ``tally`` reads an analysis run back as counts and
a one-line summary; ``threads`` hands documents to a thread of their own.
"""

"""The command line: ``main`` parses and runs; ``options`` holds the options shared by several
commands; ``analysis`` (demo, simulate, replay) and ``serving`` (serve, proxy, publish, spool)
add their commands. Only this layer parses arguments or prints."""
from .main import main

__all__ = ["main"]

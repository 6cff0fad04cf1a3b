"""``python -m streamcrystal ...``: the ``streamcrystal`` command."""
import sys

from .cli.main import main

sys.exit(main())

"""``python -m streamcrystal.cli ...``: the ``streamcrystal`` command."""
import sys

from .main import main

sys.exit(main())

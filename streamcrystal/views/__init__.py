"""Looking at results: figures of scan grids and maps, a live progress bar, live maps."""

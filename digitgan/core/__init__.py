"""What every stage uses: durable writes and checked caches (files), fetches from package registries (fetch), the
device and its speed switches (devices), pictures (grids, GIFs, curves). Imports nothing of the stages above."""

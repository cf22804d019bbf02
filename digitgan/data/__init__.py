"""The pictures a run trains on and is measured against: the sources (MNIST, Fashion-MNIST, the emoji, a folder),
their splits as uint8 Datasets, frozen caches, and the batch sampler. Imports config, errors and core only."""

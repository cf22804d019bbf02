"""How good the pictures are: the feature spaces (the shipped evaluators, EfficientNet-Lite0's ImageNet features, a
user's TorchScript), the metrics, and the Judge that scores a generator. Imports config, errors, core, data, nets."""

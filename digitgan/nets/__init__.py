"""The networks and what they see: generators and discriminators (one on a pretrained ImageNet network's features),
the convolutions' formulations, D's augmentation, the generator that draws. Imports config, errors, core and data."""

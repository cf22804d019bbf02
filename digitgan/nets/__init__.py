"""The networks and what they see: generators and discriminators, the transposed convolutions' formulations, the
augmentation of D's input, and the trained generator that draws. Imports config, errors, core and data."""

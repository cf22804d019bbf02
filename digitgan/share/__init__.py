"""What a trained run gives: its generator loaded from a checkpoint, samples, latent walks, and the exported folder
with its web page (web/). Imports every stage below it: config, errors, core, data, nets, quality, training."""

"""The training loop and everything a run holds: the objective, the update steps, the state and its checkpoints, the
run's records, its lock and its processes. Imports config, errors, core, data, nets and quality."""

"""What a run is: the Experiment, launch/run.py's command line, its callbacks (evaluation,
checkpoints, progress), the checkpoint files, the evaluation protocol and how a config.gin reads."""

"""What a run is: the Experiment, launch/run.py's command line, its callbacks (evaluation,
checkpoints, progress), the checkpoint files and the evaluation protocol."""

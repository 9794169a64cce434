"""Training: the loop shared by the teacher and every student, metrics with intervals,
checkpoints, what a run ran on, and the pipeline (data -> teacher -> students -> evaluation).
"""

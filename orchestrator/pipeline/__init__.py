"""One pass: its stages, the plan, the settings path, the Ray cluster, the trainings, Tune."""

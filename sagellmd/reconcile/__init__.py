"""The reconcile loop: a pure planner and the executor that carries out its actions."""

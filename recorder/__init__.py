"""The flight recorder: a run's record read back from its history by replaying the workflow code
that wrote it. It sits above `workflows/` (it replays them) and below the worker, which registers
the undo planner that reads through it, and the applications that show and export records."""

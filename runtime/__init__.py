"""Process plumbing beside the contracts: settings, logging, telemetry, the data converter, the
sealing of secrets and the local binaries. Imported by the worker and the applications; workflow
code imports only `runtime.instruments` (replay-safe metric instruments)."""
